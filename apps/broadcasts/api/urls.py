# A SimpleRouter, as in every other app: a DefaultRouter would add an API root at /api/v1/ that
# lists this app's resources only, and `.json` suffix routes no other endpoint has.
from rest_framework.routers import SimpleRouter

from apps.broadcasts.api.broadcasts import BroadcastViewSet, CampaignViewSet
from apps.broadcasts.api.segments import SegmentViewSet

router = SimpleRouter()
router.register("segments", SegmentViewSet, basename="segment")
router.register("broadcasts", BroadcastViewSet, basename="broadcast")
router.register("campaigns", CampaignViewSet, basename="campaign")
urlpatterns = router.urls
