"""Page-number pagination that refuses a `page_size` it cannot use.

DRF's `PageNumberPagination` falls back to its default page size on `page_size=0`,
`-1` or `abc`, so a client's mistake silently gives another page than it asked for.
Here such a value is a 400 naming the parameter (as bad filters are); a size above
`max_page_size` is still capped, as documented.
"""

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination

BAD_PAGE_SIZE = "page_size must be a positive integer, got {value!r}."


class StrictPageNumberPagination(PageNumberPagination):
    page_size_query_param = "page_size"

    def get_page_size(self, request):
        value = request.query_params.get(self.page_size_query_param)
        if value is not None:
            try:
                size = int(value)
            except ValueError:
                size = 0
            if size < 1:
                raise ValidationError(
                    {self.page_size_query_param: [BAD_PAGE_SIZE.format(value=value)]}
                )
        return super().get_page_size(request)
