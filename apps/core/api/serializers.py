from django.db.models import UniqueConstraint
from rest_framework import serializers


class StrictSerializerMixin:
    """Rejects fields the serializer does not know, so a typo in a client is a 400 naming the
    field instead of a silently ignored value."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class StrictModelSerializer(StrictSerializerMixin, serializers.ModelSerializer):
    """Also checks the model's unique constraints that include the workspace (which DRF cannot
    see, as the workspace is not a field the client sends), so a duplicate is a 400 naming the
    field rather than a database error."""

    def validate(self, attrs):
        attrs = super().validate(attrs)
        workspace = self.context.get("workspace")
        if workspace is not None:
            for constraint in self.Meta.model._meta.constraints:
                self._check_unique_in_workspace(constraint, attrs, workspace)
        return attrs

    def _check_unique_in_workspace(self, constraint, attrs, workspace):
        fields = set(getattr(constraint, "fields", ()))
        if not isinstance(constraint, UniqueConstraint) or constraint.condition or "workspace" not in fields:
            return
        own = fields - {"workspace"}
        if self.instance is None and not own <= set(attrs):
            return
        lookup = {name: attrs.get(name, getattr(self.instance, name, None)) for name in own}
        clash = self.Meta.model._default_manager.filter(workspace=workspace, **lookup)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise serializers.ValidationError({name: ["Already used in this workspace."] for name in sorted(own)})


class WorkspaceRelatedField(serializers.PrimaryKeyRelatedField):
    """A foreign key that accepts only rows of the request's workspace."""

    def __init__(self, *args, workspace_field: str = "workspace", **kwargs):
        self.workspace_field = workspace_field
        super().__init__(*args, **kwargs)

    def get_queryset(self):
        workspace = self.context.get("workspace")
        return super().get_queryset().filter(**{self.workspace_field: workspace})
