from django.conf import settings
from django.db import models


class Project(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)


class Event(models.Model):
    """The app's activity log; skene watches it (migration 0002)."""

    customer_id = models.CharField(max_length=64)  # the user's id, as skene knows it
    kind = models.CharField(max_length=64)
    created_at = models.DateTimeField()
