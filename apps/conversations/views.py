from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render

from apps.conversations.selectors import attachment_get_for_member, inbox_bootstrap

# Never rendered by the browser as a page: scripts inside could run on our origin.
INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "video/mp4", "audio/mpeg", "audio/ogg")


@login_required
def attachment(request, attachment_uuid):
    found = attachment_get_for_member(user=request.user, attachment_uuid=attachment_uuid)
    if found is None or not found.file:
        raise Http404
    return file_response(found)


def file_response(found) -> FileResponse:
    """A stored file, downloaded rather than rendered unless it is a plain image, video or sound."""
    inline = found.content_type in INLINE_TYPES
    response = FileResponse(
        found.file.open("rb"),
        as_attachment=not inline,
        filename=found.filename,
        content_type=found.content_type if inline else "application/octet-stream",
    )
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
def inbox(request):
    """The operators' live inbox: one page, kept current over the websocket, reading and writing
    through the REST API (static/inbox/)."""
    context = request.workspace_context
    if context is None:
        return redirect("home")  # a person with no workspace yet
    return render(
        request, "conversations/inbox.html", {"bootstrap": inbox_bootstrap(context=context, user=request.user)}
    )
