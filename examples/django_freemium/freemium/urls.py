from django.urls import path

from freemium import views

urlpatterns = [
    path("api/search", views.search),
    path("upgrade", views.upgrade),
]
