"""`/api/v1/reports/`: the analytics of one workspace for its supervisors, owners and API tokens.

    GET /api/v1/reports/conversations/   the export's rows as JSON, cursor-paginated
    GET /api/v1/reports/export/?format=csv|xlsx   the same rows as a file download
    GET /api/v1/reports/summary/          the dashboard's headline numbers

Every one takes the dashboard's query parameters (apps/analytics/filters.py: from, to, team,
agent, channel, category, language); a bad one is a 400 naming it. Agents get a 403. The export
works with the session too, so the dashboard's "Download" button is a plain link to it."""

from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import FileResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.generics import GenericAPIView
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from apps.analytics.api.serializers import ConversationRowSerializer
from apps.analytics.export import (
    COLUMN_NAMES,
    CSV_MEDIA_TYPE,
    FIELDS,
    XLSX_MEDIA_TYPE,
    cycles_for_report,
    export_audit,
    export_csv_stream,
    export_filename,
    export_row,
    export_xlsx_file,
    names_of,
)
from apps.analytics.filters import report_filters
from apps.core.api.pagination import CursorPagination
from apps.core.api.permissions import IsWorkspaceMember
from apps.core.exceptions import DomainError, PermissionDenied
from apps.core.handlers import ThreadedRequest
from apps.workspaces.models import ADMIN_ROLES, INTEGRATION_ROLE

REPORT_ROLES = frozenset({*ADMIN_ROLES, INTEGRATION_ROLE})
FILE_BLOCK = 64 * 1024

FILTER_PARAMETERS = [
    OpenApiParameter(
        "from", OpenApiTypes.DATE, description="First day, workspace-local (default: 6 days before `to`)."
    ),
    OpenApiParameter("to", OpenApiTypes.DATE, description="Last day, included (default: today)."),
    OpenApiParameter("team", OpenApiTypes.INT, description="A team's id: its conversations."),
    OpenApiParameter("agent", OpenApiTypes.INT, description="A member's id: the conversations last assigned to them."),
    OpenApiParameter("channel", OpenApiTypes.INT, description="A channel's id."),
    OpenApiParameter("category", OpenApiTypes.STR, description="A category, as chosen when closing."),
    OpenApiParameter("language", OpenApiTypes.STR, description="A language code, e.g. en."),
]


class CanReadReports(IsWorkspaceMember):
    """Reports are the supervisors' and owners' (and the back office's, by API token)."""

    def has_permission(self, request, view):
        if not super().has_permission(request, view):
            return False
        if request.workspace_role not in REPORT_ROLES:
            raise PermissionDenied("Reports are for the workspace's supervisors and owners.")
        return True


class CyclePagination(CursorPagination):
    ordering = ("opened_at", "id")


def streamed(request, chunks: Iterator[bytes]) -> Iterator[bytes] | AsyncIterator[bytes]:
    """Under Django's own ASGI handler (the async test client; `django.core.asgi`) Django would
    turn a synchronous iterator into a list before sending a byte (StreamingHttpResponse.__aiter__):
    the whole export in memory. There it gets an async iterator instead, pulling one chunk at a
    time on the request's own thread, which holds the database connection and so the server-side
    cursor. Daphne serves Parley through apps.core.handlers, which reads a synchronous stream on
    the request's thread a piece at a time."""
    served = getattr(request, "_request", request)
    if isinstance(served, ASGIRequest) and not isinstance(served, ThreadedRequest):
        return _pulled(chunks)
    return chunks


async def _pulled(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    pull = sync_to_async(next, thread_sensitive=True)
    try:
        while (chunk := await pull(chunks, None)) is not None:
            yield chunk
    finally:  # a client gone mid-download closes the cursor and its transaction here
        close = getattr(chunks, "close", None)
        if close is not None:
            await sync_to_async(close, thread_sensitive=True)()


class ReportView(GenericAPIView):
    permission_classes = [CanReadReports]
    filter_backends: list = []  # the report's own parameters, read by report_filters


class ConversationsView(ReportView):
    serializer_class = ConversationRowSerializer
    pagination_class = CyclePagination

    @extend_schema(parameters=FILTER_PARAMETERS, responses={200: ConversationRowSerializer(many=True)})
    def get(self, request):
        """One row per conversation cycle opened in the range, oldest first: the export's columns
        (docs/reports.md)."""
        filters = report_filters(workspace=request.workspace, query=request.query_params)
        page = self.paginate_queryset(cycles_for_report(filters).values(*FIELDS))
        names = names_of(filters.workspace)
        rows = [dict(zip(COLUMN_NAMES, export_row(tuple(cycle.values()), names), strict=True)) for cycle in page]
        return self.get_paginated_response(self.get_serializer(rows, many=True).data)


class ExportView(ReportView):
    serializer_class = ConversationRowSerializer  # the columns; the body is a file

    def perform_content_negotiation(self, request, force=False):
        # `format` names the file here, not one of DRF's renderers; errors are JSON.
        renderer = JSONRenderer()
        return renderer, renderer.media_type

    @extend_schema(
        parameters=[
            OpenApiParameter("format", str, enum=["csv", "xlsx"], description="The file's format (default csv)."),
            *FILTER_PARAMETERS,
        ],
        responses={(200, "text/csv"): OpenApiTypes.BINARY, (200, XLSX_MEDIA_TYPE): OpenApiTypes.BINARY},
    )
    def get(self, request):
        """The conversations of the range as a CSV or XLSX file, streamed (any size)."""
        extension = request.query_params.get("format") or "csv"
        if extension not in ("csv", "xlsx"):
            raise DomainError("'format' is csv or xlsx.", fields={"format": ["Not csv or xlsx."]})
        filters = report_filters(workspace=request.workspace, query=request.query_params)
        cycles, names = cycles_for_report(filters), names_of(filters.workspace)
        filename = export_filename(filters, extension)
        export_audit(
            workspace_id=request.workspace.pk,
            described=f"Conversations {filters.start} to {filters.end} ({extension.upper()})",
            details={"format": extension, **filters.query()},
            request=request,
        )
        if extension == "csv":
            response = StreamingHttpResponse(
                streamed(request, export_csv_stream(cycles, names)), content_type=CSV_MEDIA_TYPE
            )
            response["Content-Disposition"] = f'attachment; filename="{filename}"'
            return response
        content = export_xlsx_file(cycles, names)
        response = FileResponse(content, as_attachment=True, filename=filename, content_type=XLSX_MEDIA_TYPE)
        response.streaming_content = streamed(request, iter(lambda: content.read(FILE_BLOCK), b""))
        return response


class SummaryView(ReportView):
    @extend_schema(parameters=FILTER_PARAMETERS, responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        """The dashboard's headline numbers for the range and filters (docs/metrics.md)."""
        from apps.analytics.selectors import report_summary

        return Response(report_summary(report_filters(workspace=request.workspace, query=request.query_params)))
