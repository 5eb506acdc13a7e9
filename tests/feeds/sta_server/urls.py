"""The service root is <server>/sta/v1.1/ (the package mounts its API under the version)."""

from django.urls import include, path

urlpatterns = [path("sta/", include("sensorthings.versions.v1_1.urls"))]
