from django.http import JsonResponse


def create_project(request):
    return JsonResponse({})


def export_report(request, pk):
    return JsonResponse({})
