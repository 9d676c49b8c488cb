# KeyCore: one image for the web server, the Celery workers and Celery beat (docs/operations.md).
#   web:    gunicorn -c config/gunicorn.py config.wsgi --workers 4 --bind 0.0.0.0:8000   (the default command)
#   worker: celery -A config worker --concurrency 8 --loglevel INFO
#   beat:   celery -A config beat --loglevel INFO                                        (exactly one)
# Configured only through the environment and *_FILE secrets (README.md, "Settings").

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# the dependencies alone first: they change less often than the code, so this layer is reused
COPY pyproject.toml ./
RUN python -m venv /opt/keycore \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && /opt/keycore/bin/pip install --no-cache-dir -r requirements.txt

FROM python:3.11-slim-bookworm
ENV PATH=/opt/keycore/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    DJANGO_SETTINGS_MODULE=config.settings \
    KEYCORE_VAR_DIR=/var/lib/keycore \
    STATIC_ROOT=/app/staticfiles
RUN groupadd --system --gid 10001 keycore \
    && useradd --system --uid 10001 --gid keycore --home-dir /app --no-create-home --shell /usr/sbin/nologin keycore \
    && mkdir -p /var/lib/keycore \
    && chown keycore:keycore /var/lib/keycore
COPY --from=build /opt/keycore /opt/keycore
WORKDIR /app
COPY manage.py ./
COPY config config
COPY keycore keycore
COPY vendor_portal vendor_portal
COPY tenant_portal tenant_portal
COPY templates templates
COPY static static
# the portals' assets, fingerprinted for WhiteNoise; throwaway secrets only because every command checks them
RUN SECRET_KEY=collectstatic-only \
    KEYCORE_ROOT_KEY="$(python -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')" \
    python manage.py collectstatic --noinput --verbosity 0 \
    && python -m compileall -q /app
USER 10001:10001
EXPOSE 8000
CMD ["gunicorn", "-c", "config/gunicorn.py", "config.wsgi", "--workers", "4", "--bind", "0.0.0.0:8000"]
