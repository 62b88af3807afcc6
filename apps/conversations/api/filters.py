from django_filters import rest_framework as filters

from apps.conversations import selectors
from apps.conversations.models import Conversation
from apps.core.api.filters import IdFilter, MomentFilter


class ConversationFilter(filters.FilterSet):
    """The inbox's list and the API's: a view (mine, unassigned, team, queue, all), the usual
    fields, and `q` to search by contact name, phone, email or message text. Every row also says
    which bot (workflow) handles it now, in the same query."""

    view = filters.ChoiceFilter(choices=[(v, v) for v in selectors.INBOX_VIEWS], method="filter_view")
    status = filters.MultipleChoiceFilter(choices=Conversation.Status.choices, distinct=False)
    priority = filters.MultipleChoiceFilter(choices=Conversation.Priority.choices, distinct=False)
    tag = IdFilter(method="filter_tag")
    q = filters.CharFilter(method="filter_search")
    updated_since = MomentFilter(field_name="last_message_at", lookup_expr="gte")
    opened_after = MomentFilter(field_name="opened_at", lookup_expr="gte")
    opened_before = MomentFilter(field_name="opened_at", lookup_expr="lt")
    closed_after = MomentFilter(field_name="closed_at", lookup_expr="gte")
    closed_before = MomentFilter(field_name="closed_at", lookup_expr="lt")

    class Meta:
        model = Conversation
        fields = (
            "view",
            "status",
            "channel",
            "assignee",
            "team",
            "contact",
            "tag",
            "category",
            "language",
            "priority",
        )

    @classmethod
    def _cached_form_class(cls, build):
        if "_form_class" not in cls.__dict__:
            cls._form_class = build()
        return cls._form_class

    def get_form_class(self):
        # Its fields depend on nothing of the request (choices, and querysets that each request's
        # form copies and narrows to a row by id): made once, not on every request of the inbox.
        return self._cached_form_class(super().get_form_class)

    def filter_queryset(self, queryset):
        return selectors.with_bot(super().filter_queryset(queryset))

    def filter_view(self, queryset, name, value):
        return selectors.inbox_view_filter(queryset, view=value, membership=getattr(self.request, "membership", None))

    def filter_tag(self, queryset, name, value):
        return selectors.with_tag(queryset, tag_id=value)

    def filter_search(self, queryset, name, value):
        return selectors.conversation_search(queryset, workspace_id=self.request.workspace.pk, query=value)
