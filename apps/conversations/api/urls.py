from rest_framework.routers import SimpleRouter

from apps.conversations.api import views

router = SimpleRouter()
router.register("conversations", views.ConversationViewSet, basename="conversation")
router.register("notifications", views.NotificationViewSet, basename="notification")
router.register("messages", views.MessageViewSet, basename="message")
urlpatterns = router.urls
