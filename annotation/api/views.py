"""Annotation API views: resolve the project and role, call one selector or service.

Every route below a project is `/api/v1/projects/{project_slug}/...`. A project the
caller does not belong to answers 404 (its existence does not leak); a member whose
role is too low gets 403 with the role that is needed.
"""

from contextlib import contextmanager

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import AllowAny
from rest_framework.response import Response as ApiResponse

from annotation.api import filters
from annotation.api import serializers as s
from annotation.models import Comparison, Judgment, Membership, Project, Prompt, Role
from annotation.models import Response as ResponseModel
from annotation.permissions import ROLE_RANK
from annotation.selectors import data as data_selectors
from annotation.selectors.projects import (
    membership_list,
    project_get,
    project_list,
    roles_by_project,
)
from annotation.services import projects as project_services
from config.pagination import StrictPageNumberPagination

PROJECT_NOT_FOUND = (
    "No project {slug!r} among your projects. Check the slug, or ask one of its "
    "admins to add you (GET /api/v1/projects/ lists yours)."
)
ROLE_NEEDED = (
    "This needs the {needed} role (or higher) in project {slug!r}; you are {role}."
)
SUPERUSER_NEEDED = "Only superusers create projects; ask a site administrator."
OBJECT_NOT_FOUND = "No {noun} {key!r} in project {slug!r}."
UNKNOWN_USER = (
    "No user named {username!r}. Create the account first, e.g. "
    "`manage.py add_member {slug} {username} --role {role} --create`."
)
ALREADY_MEMBER = (
    "{username!r} is already a member of {slug!r} as {role}; PATCH "
    "/api/v1/projects/{slug}/members/{username}/ to change the role."
)

PROJECT_SLUG = OpenApiParameter(
    "project_slug", OpenApiTypes.STR, OpenApiParameter.PATH, description="Project slug."
)


class Pagination(StrictPageNumberPagination):
    max_page_size = 500


@contextmanager
def service_errors_as_400():
    """Turn a service's Django ValidationError into a 400 naming the field."""
    try:
        yield
    except DjangoValidationError as exc:
        detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        raise serializers.ValidationError(detail) from exc


class ProjectScopedMixin:
    """Load `project_slug` for the caller and check their role for this action.

    `minimum_role` applies to every action unless `action_roles` names it.
    """

    minimum_role: str = Role.RESEARCHER
    action_roles: dict[str, str] = {}
    noun = "object"
    pagination_class = Pagination

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        slug = kwargs["project_slug"]
        found = project_get(user=request.user, slug=slug)
        if found is None:
            raise NotFound(PROJECT_NOT_FOUND.format(slug=slug))
        self.project, self.role = found
        needed = self.action_roles.get(getattr(self, "action", None), self.minimum_role)
        if ROLE_RANK[self.role] < ROLE_RANK[needed]:
            raise PermissionDenied(
                ROLE_NEEDED.format(needed=needed, slug=slug, role=self.role)
            )

    def is_schema_view(self) -> bool:
        return getattr(self, "swagger_fake_view", False)

    def get_object(self):
        try:
            return super().get_object()
        except Http404:
            key = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
            raise NotFound(
                OBJECT_NOT_FOUND.format(noun=self.noun, key=key, slug=self.project.slug)
            ) from None


@extend_schema(tags=["projects"])
class ProjectViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Projects you belong to. Superusers create; project admins change settings."""

    serializer_class = s.ProjectSerializer
    queryset = Project.objects.none()
    lookup_field = "slug"
    pagination_class = Pagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        return project_list(user=self.request.user)

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if not getattr(self, "swagger_fake_view", False):
            context["roles"] = roles_by_project(user=self.request.user)
        return context

    def _project_for(self, slug: str, needed: str) -> Project:
        found = project_get(user=self.request.user, slug=slug)
        if found is None:
            raise NotFound(PROJECT_NOT_FOUND.format(slug=slug))
        project, role = found
        if ROLE_RANK[role] < ROLE_RANK[needed]:
            raise PermissionDenied(
                ROLE_NEEDED.format(needed=needed, slug=slug, role=role)
            )
        return project

    def retrieve(self, request, slug: str):
        project = self._project_for(slug, Role.ANNOTATOR)
        return ApiResponse(self.get_serializer(project).data)

    @extend_schema(request=s.ProjectCreateSerializer, responses=s.ProjectSerializer)
    def create(self, request):
        if not request.user.is_superuser:
            raise PermissionDenied(SUPERUSER_NEEDED)
        data = self._validated(s.ProjectCreateSerializer, request.data)
        with service_errors_as_400():
            project = project_services.project_create(**data)
        return ApiResponse(
            self.get_serializer(project).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(request=s.ProjectUpdateSerializer, responses=s.ProjectSerializer)
    def partial_update(self, request, slug: str):
        project = self._project_for(slug, Role.ADMIN)
        data = self._validated(s.ProjectUpdateSerializer, request.data)
        with service_errors_as_400():
            project = project_services.project_update(project=project, **data)
        return ApiResponse(self.get_serializer(project).data)

    @staticmethod
    def _validated(serializer_class, data) -> dict:
        serializer = serializer_class(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


@extend_schema(tags=["members"], parameters=[PROJECT_SLUG])
class MembershipViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Members of a project: researchers read, project admins manage."""

    serializer_class = s.MembershipSerializer
    queryset = Membership.objects.none()
    lookup_field = "username"
    lookup_value_regex = r"[\w.@+-]+"
    noun = "member"
    action_roles = {
        "create": Role.ADMIN,
        "partial_update": Role.ADMIN,
        "destroy": Role.ADMIN,
    }

    def get_queryset(self):
        if self.is_schema_view():
            return self.queryset
        return membership_list(project=self.project)

    def get_object(self):
        membership = self.get_queryset().filter(user__username=self.kwargs["username"])
        if not membership:
            raise NotFound(
                OBJECT_NOT_FOUND.format(
                    noun="member", key=self.kwargs["username"], slug=self.project.slug
                )
            )
        return membership[0]

    @extend_schema(
        parameters=[
            OpenApiParameter("username", OpenApiTypes.STR, OpenApiParameter.PATH)
        ]
    )
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(
        request=s.MembershipCreateSerializer, responses=s.MembershipSerializer
    )
    def create(self, request, project_slug: str):
        serializer = s.MembershipCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        username, role = serializer.validated_data.values()
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise serializers.ValidationError(
                {
                    "username": [
                        UNKNOWN_USER.format(
                            username=username, slug=project_slug, role=role
                        )
                    ]
                }
            )
        existing = self.get_queryset().filter(user=user).first()
        if existing is not None:
            raise serializers.ValidationError(
                {
                    "username": [
                        ALREADY_MEMBER.format(
                            username=username, slug=project_slug, role=existing.role
                        )
                    ]
                }
            )
        membership = project_services.membership_set(
            project=self.project, user=user, role=role
        )
        return ApiResponse(
            s.MembershipSerializer(membership).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        request=s.MembershipUpdateSerializer,
        responses=s.MembershipSerializer,
        parameters=[
            OpenApiParameter("username", OpenApiTypes.STR, OpenApiParameter.PATH)
        ],
    )
    def partial_update(self, request, project_slug: str, username: str):
        membership = self.get_object()
        serializer = s.MembershipUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = project_services.membership_set(
            project=self.project, user=membership.user, **serializer.validated_data
        )
        return ApiResponse(s.MembershipSerializer(membership).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("username", OpenApiTypes.STR, OpenApiParameter.PATH)
        ]
    )
    def destroy(self, request, project_slug: str, username: str):
        membership = self.get_object()
        project_services.membership_remove(project=self.project, user=membership.user)
        return ApiResponse(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["data"], parameters=[PROJECT_SLUG])
class PromptViewSet(ProjectScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Prompts of a project (conversations), with how many responses each has."""

    serializer_class = s.PromptSerializer
    queryset = Prompt.objects.none()
    filterset_class = filters.PromptFilter
    noun = "prompt"

    def get_queryset(self):
        if self.is_schema_view():
            return self.queryset
        return data_selectors.prompt_list(project=self.project)


@extend_schema(tags=["data"], parameters=[PROJECT_SLUG])
class ResponseViewSet(ProjectScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Responses of a project's prompts, with model names and generation settings."""

    serializer_class = s.ResponseSerializer
    queryset = ResponseModel.objects.none()
    filterset_class = filters.ResponseFilter
    noun = "response"

    def get_queryset(self):
        if self.is_schema_view():
            return self.queryset
        return data_selectors.response_list(project=self.project)


@extend_schema(tags=["data"], parameters=[PROJECT_SLUG])
class ComparisonViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Pairs to judge, with model names: researchers and admins only.

    PATCH sets the queue priority or marks the comparison gold (`gold_choice`).
    """

    serializer_class = s.ComparisonSerializer
    queryset = Comparison.objects.none()
    filterset_class = filters.ComparisonFilter
    noun = "comparison"

    def get_queryset(self):
        if self.is_schema_view():
            return self.queryset
        return data_selectors.comparison_list(project=self.project)

    @extend_schema(
        request=s.ComparisonUpdateSerializer, responses=s.ComparisonSerializer
    )
    def partial_update(self, request, project_slug: str, pk: str):
        from annotation.services.comparisons import comparison_update

        comparison = self.get_object()
        serializer = s.ComparisonUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with service_errors_as_400():
            comparison = comparison_update(
                comparison=comparison, **serializer.validated_data
            )
        return ApiResponse(s.ComparisonSerializer(comparison).data)


@extend_schema(tags=["data"], parameters=[PROJECT_SLUG])
class JudgmentViewSet(ProjectScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Judgments: researchers see all (human and prior), annotators their own.

    An annotator's view has no annotator names, no gold flag and no model names.
    """

    queryset = Judgment.objects.none()
    lookup_field = "public_id"
    lookup_url_kwarg = "id"
    noun = "judgment"
    minimum_role = Role.ANNOTATOR

    def _is_annotator(self) -> bool:
        return getattr(self, "role", None) == Role.ANNOTATOR

    @property
    def filterset_class(self):
        if self._is_annotator():
            return filters.AnnotatorJudgmentFilter
        return filters.JudgmentFilter

    def get_serializer_class(self):
        if self._is_annotator():
            return s.OwnJudgmentSerializer
        return s.JudgmentSerializer

    def get_queryset(self):
        if self.is_schema_view():
            return self.queryset
        return data_selectors.judgment_list(
            project=self.project, user=self.request.user, role=self.role
        )

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "id", OpenApiTypes.UUID, OpenApiParameter.PATH, "Judgment id."
            )
        ]
    )
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)


@extend_schema(tags=["auth"])
class TokenView(GenericAPIView):
    """Exchange a username and password for the API token (created on first use)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    serializer_class = s.TokenRequestSerializer

    @extend_schema(request=s.TokenRequestSerializer, responses=s.TokenSerializer)
    def post(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = serializer.validated_data["user"]
        token = project_services.token_issue(user=user)
        return ApiResponse({"token": token.key, "username": user.get_username()})
