# The Marsad image: the `marsad` command, the flows and prefect.yaml, run by docker-compose.yml as
# the migrate and deploy one-shots, the Prefect server and the worker.
FROM python:3.11-slim

# PYTHONDONTWRITEBYTECODE is deliberately not set, and the code is compiled below: with .pyc files
# `import prefect` takes about 0.8 s instead of 2 s, paid by every flow run the worker starts.
# APP_DIR is where the flows live; prefect.yaml's pull step changes into it before each run.
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    APP_DIR=/app \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false

RUN useradd --create-home --uid 10001 --user-group marsad

WORKDIR /app

# Dependencies first, read from pyproject.toml: this layer is rebuilt only when they change, not on
# every edit of the code. (pyproject keeps SQLAlchemy below 2.1, on which Prefect 3.8.8's
# scheduler creates no runs.)
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the project. Editable, as the README installs it: marsad/db.py finds the migrations in the
# alembic/ folder beside the package, and prefect.yaml's entrypoints are files under /app/flows.
# The outbox volume is created from /data/outbox, so it belongs to the app user on first mount.
COPY . .
RUN pip install --no-deps -e . \
    && python -m compileall -q marsad flows models alembic \
    && mkdir -p /data/outbox \
    && chown marsad:marsad /data/outbox

USER marsad

CMD ["marsad", "--help"]
