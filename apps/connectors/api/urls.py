from rest_framework.routers import SimpleRouter

from apps.connectors.api import views

router = SimpleRouter()
router.register("channels", views.ChannelViewSet, basename="channel")
router.register("templates", views.MessageTemplateViewSet, basename="template")
router.register("webhooks", views.WebhookSubscriptionViewSet, basename="webhook")
urlpatterns = router.urls
