from rest_framework.routers import SimpleRouter

from apps.conversations.api import views

router = SimpleRouter()
router.register("conversations", views.ConversationViewSet, basename="conversation")
router.register("notifications", views.NotificationViewSet, basename="notification")
urlpatterns = router.urls
