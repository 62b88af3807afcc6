from django.urls import path

from apps.analytics.api import views

urlpatterns = [
    path("reports/conversations/", views.ConversationsView.as_view(), name="report-conversations"),
    path("reports/export/", views.ExportView.as_view(), name="report-export"),
    path("reports/summary/", views.SummaryView.as_view(), name="report-summary"),
]
