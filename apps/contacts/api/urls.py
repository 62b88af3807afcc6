from rest_framework.routers import SimpleRouter

from apps.contacts.api import views

router = SimpleRouter()
router.register("contacts", views.ContactViewSet, basename="contact")
urlpatterns = router.urls
