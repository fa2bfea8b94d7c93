"""The web page served by the same Bento at /ui: a user's history beside their recommendations, and the models."""

from recsys.serving.web.app import create_app

__all__ = ["create_app"]
