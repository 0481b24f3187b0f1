from django.urls import path

from project import views

urlpatterns = [
    path("api/projects/", views.create_project),
    path("api/reports/<int:pk>/export", views.export_report),
]
