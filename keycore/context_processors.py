from django.conf import settings


def keycore(request):
    return {
        "KEYCORE_DEMO": settings.DEBUG,
        "KEYCORE_REQUIRE_ADMIN_MFA": settings.KEYCORE_REQUIRE_ADMIN_MFA,
        "KEYCORE_DEMO_KMS": settings.KEYCORE_DEMO_KMS,
    }
