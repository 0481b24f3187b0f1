from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.views.decorators.csrf import csrf_exempt


def customer_of(request: HttpRequest) -> str | None:
    return request.headers.get("X-Api-Key")  # the key names the customer; look yours up


@csrf_exempt  # an API authenticated by its key, not a browser form
def search(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"results": ["the", "answers"], "query": request.GET.get("q", "")})


def upgrade(request: HttpRequest) -> HttpResponse:
    """To Stripe's Payment Link; client_reference_id tells skene who paid."""
    query = urlencode({"client_reference_id": request.GET.get("customer", "")})
    return HttpResponseRedirect(f"{settings.STRIPE_PAYMENT_LINK}?{query}")
