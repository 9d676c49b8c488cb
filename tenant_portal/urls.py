from django.urls import path

from tenant_portal import views

app_name = "tenant"

urlpatterns = [
    path("", views.switch, name="switch"),
    path("<str:tenant>/", views.overview, name="overview"),
]
