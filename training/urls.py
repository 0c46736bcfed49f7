"""Page routes of the training app."""

urlpatterns: list = []
