from rest_framework.routers import SimpleRouter

from apps.contacts.api import views

router = SimpleRouter()
router.register("contacts", views.ContactViewSet, basename="contact")
router.register("tags", views.TagViewSet, basename="tag")
router.register("custom-fields", views.CustomFieldViewSet, basename="custom-field")
router.register("orders", views.OrderViewSet, basename="order")
router.register("stock-events", views.StockEventViewSet, basename="stock-event")
urlpatterns = router.urls
