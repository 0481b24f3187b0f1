from django.urls import path

from tests.integrations.django_site import views

urlpatterns = [
    path("api/calls", views.api_call),
    path("api/boom", views.boom),
    path("api/fail", views.fail),
    path("api/gated-twice", views.gated_twice),
    path("pages/home", views.home),
    path("beta/<path:rest>", views.beta),
    path("exports", views.export),
    path("reports", views.atomic_report),
    path("drf/exports", views.DrfExports.as_view()),
]
