"""Settings read from the environment once, here, with safe development defaults.

`project.settings.production` hardens these; `project.settings.test` isolates the test run.
Every variable is listed in the README's configuration table.
"""

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from project.settings.dburl import parse_database_url, redis_url_with_db
from project.settings.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# Off unless asked for (`DEBUG=1 make run`): Django's debug page shows settings, the database and
# Redis URLs among them, to whoever reaches the server. Static files are served by WhiteNoise either way.
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "dev-only-insecure-secret-key-change-me-0123456789abcdef")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django_prometheus",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "project",
    "users",
    "inventory",
    "orders",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "project.http.middleware.RequestIdMiddleware",
    "project.ratelimit.limiter.RateLimitMiddleware",
    "project.http.middleware.RequestBodyLimitMiddleware",
    "project.http.middleware.ContentSecurityPolicyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "project.db.routers.ReadYourWritesMiddleware",
    "project.http.degraded.DegradedModeMiddleware",
    "project.ratelimit.limiter.SessionMiddleware",  # Django's, reusing the session the limiter read
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "project.observability.profiling.ProfileMiddleware",
    "project.http.middleware.LazyMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "project.observability.requests.PrometheusAfterMiddleware",  # django-prometheus's, cheaper per request
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "orders.cart.cart_summary",
            ],
        },
    },
]

# --- PostgreSQL -------------------------------------------------------------
# Web processes use Django's native psycopg pool; Celery workers, beat and the
# relay set DB_POOL=0 (their start scripts do) and keep persistent connections.
DATABASE_URL = env_str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/stockroom")
DB_POOL = env_bool("DB_POOL", True)
DB_POOL_MIN_SIZE = env_int("DB_POOL_MIN_SIZE", 2)
DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 8)
# Seconds a request waits for a pooled connection (and to connect): short, so a
# dead database fails fast instead of holding a worker for 30 s.
DB_POOL_TIMEOUT = env_float("DB_POOL_TIMEOUT", 2.0)
DB_CONNECT_TIMEOUT = env_int("DB_CONNECT_TIMEOUT", 2)
# Longest wait between a pool's attempts to reconnect (project.db.backend.pool): a web worker
# serves again at most this long after the database is back.
DB_POOL_MAX_RECONNECT_DELAY = env_float("DB_POOL_MAX_RECONNECT_DELAY", 2.0)
DB_STATEMENT_TIMEOUT_MS = env_int("DB_STATEMENT_TIMEOUT_MS", 15_000)
DB_LOCK_TIMEOUT_MS = env_int("DB_LOCK_TIMEOUT_MS", 3_000)
DB_IDLE_IN_TRANSACTION_TIMEOUT_MS = env_int("DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", 30_000)
DB_CONN_MAX_AGE = env_int("DB_CONN_MAX_AGE", 600)
# Behind PgBouncer in transaction mode (DATABASE_POOLER=pgbouncer) each transaction may run on
# another server connection, so nothing may live in a session (README, "Behind PgBouncer"): no
# `options` startup parameter (PgBouncer 1.18 refuses it, and ignoring it would drop the timeouts):
# the timeouts are the database's own defaults (`manage.py set_database_timeouts`), checked on
# every new connection (project.db.pooler); no prepared statements; no server-side cursors. What
# needs a session (the relay's LISTEN; migrate with DB_DIRECT=1) connects to PostgreSQL itself at
# DATABASE_DIRECT_URL. Empty: DATABASE_URL is PostgreSQL itself.
DATABASE_POOLER = env_str("DATABASE_POOLER", "")
DATABASE_DIRECT_URL = env_str("DATABASE_DIRECT_URL", "")
# DB_DIRECT=1: this process (migrate, a shell that needs a session) uses DATABASE_DIRECT_URL, not the pooler.
DB_DIRECT = env_bool("DB_DIRECT", False)
if DATABASE_POOLER not in {"", "pgbouncer"}:
    raise ImproperlyConfigured(f"DATABASE_POOLER={DATABASE_POOLER!r}: expected 'pgbouncer' or nothing")
if DATABASE_POOLER and not DATABASE_DIRECT_URL:
    raise ImproperlyConfigured(
        "DATABASE_POOLER=pgbouncer needs DATABASE_DIRECT_URL: PostgreSQL itself, for the relay's LISTEN and migrate"
    )


def session_options() -> dict:
    """The connection options of a session of its own (no pooler, or DATABASE_DIRECT_URL)."""
    return {
        "connect_timeout": DB_CONNECT_TIMEOUT,
        # psycopg prepares a statement after its fifth run on a connection. Only the cursors of
        # project.db.backend's prepared_cursor can be prepared (Django's bind on the client); Django
        # passes None, which turns preparing off altogether.
        "prepare_threshold": 5,
        # Per-connection limits, set at connect time so pooled connections carry them.
        "options": (
            f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS}"
            f" -c lock_timeout={DB_LOCK_TIMEOUT_MS}"
            f" -c idle_in_transaction_session_timeout={DB_IDLE_IN_TRANSACTION_TIMEOUT_MS}"
        ),
    }


def database_settings(url: str, *, name: str = "DATABASE_URL", pooler: str = "", direct_url: str = "") -> dict:
    config = parse_database_url(name, url)
    options = config.setdefault("OPTIONS", {})
    if pooler:
        # A transaction-mode pooler: no startup `options` (the database's own defaults, checked by
        # project.db.pooler at connect), nothing prepared (PgBouncer 1.18 keeps no prepared statement
        # across transactions; prepared_cursor falls back to a plain cursor), and no server-side
        # cursors (Django's, outside a transaction, are WITH HOLD: they outlive the transaction).
        options["connect_timeout"] = DB_CONNECT_TIMEOUT
        options["prepare_threshold"] = None
        config["DISABLE_SERVER_SIDE_CURSORS"] = True
        config["POOLER"] = pooler
        # Where a session of its own connects (the relay's LISTEN, the test database's creation).
        direct = parse_database_url("DATABASE_DIRECT_URL", direct_url)
        config["DIRECT"] = {key: direct[key] for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT")}
        config["DIRECT"]["OPTIONS"] = session_options()
    else:
        options.update(session_options())
    config["ENGINE"] = "project.db.backend"  # django-prometheus's backend plus a circuit breaker
    # With the pool, each connection is checked before it is lent, so connections killed while
    # the database was away are dropped, not used (project.db.backend.health: a healthy one costs
    # no round trip). Without it (workers), Django checks at the start of each request or task.
    config["CONN_HEALTH_CHECKS"] = True
    if DB_POOL:
        options["pool"] = {
            "min_size": DB_POOL_MIN_SIZE,
            "max_size": DB_POOL_MAX_SIZE,
            "timeout": DB_POOL_TIMEOUT,
            "max_reconnect_delay": DB_POOL_MAX_RECONNECT_DELAY,
            "name": "stockroom",
        }
        config["CONN_MAX_AGE"] = 0
    else:
        config["CONN_MAX_AGE"] = DB_CONN_MAX_AGE
    return config


DATABASES = {
    "default": (
        database_settings(DATABASE_DIRECT_URL or DATABASE_URL)
        if DB_DIRECT
        else database_settings(DATABASE_URL, pooler=DATABASE_POOLER, direct_url=DATABASE_DIRECT_URL)
    )
}
# An optional read replica for catalogue reads (project.db.routers.ReplicaRouter).
REPLICA_DATABASE_URL = env_str("REPLICA_DATABASE_URL", "")
if REPLICA_DATABASE_URL:
    DATABASES["replica"] = database_settings(REPLICA_DATABASE_URL, name="REPLICA_DATABASE_URL")
# The models whose reads may go to the replica (app_label, model_name): the catalogue.
REPLICA_READ_MODELS = [("inventory", "product"), ("inventory", "warehouse"), ("inventory", "stocklevel")]
# Anonymous catalogue reads are at most this stale: a replica further behind (measured, project.db.replica)
# is skipped for the primary. Signed-in clients always read their own writes (project.db.own_writes).
REPLICA_MAX_LAG_SECONDS = env_float("REPLICA_MAX_LAG_SECONDS", 2.0)
# Each web process probes the replica's replay position at most this often (in a thread of its own).
REPLICA_CHECK_INTERVAL_MS = env_int("REPLICA_CHECK_INTERVAL_MS", 100)
DATABASE_ROUTERS = ["project.db.routers.ReplicaRouter"]
# The breaker in front of new connections: this many failures in a row open it for the cooldown.
CIRCUIT_FAILURE_THRESHOLD = env_int("CIRCUIT_FAILURE_THRESHOLD", 3)
CIRCUIT_COOLDOWN_SECONDS = env_float("CIRCUIT_COOLDOWN_SECONDS", 5.0)
# Last good catalogue reads are kept this long, to serve (marked X-Stale) while PostgreSQL is down.
CATALOGUE_STALE_TTL_SECONDS = env_int("CATALOGUE_STALE_TTL_SECONDS", 86_400)
# The catalogue's availability (API, shop pages, cart) is at most this old: each web process reads
# it again from PostgreSQL once its value is this old; 0 reads it every time (inventory.availability).
CATALOGUE_AVAILABILITY_MAX_AGE_MS = max(env_int("CATALOGUE_AVAILABILITY_MAX_AGE_MS", 1000), 0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache on one database number, the Celery broker on another -------
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_BROKER_DB = env_int("REDIS_BROKER_DB", 1)
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 0.5)
CACHE_KEY_PREFIX = env_str("CACHE_KEY_PREFIX", "stockroom")

CACHES = {
    "default": {
        "BACKEND": "django_prometheus.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": CACHE_KEY_PREFIX,
        "TIMEOUT": 300,
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "SOCKET_CONNECT_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            # The cache is an optimisation: Redis down means a cache miss, not a 500.
            "IGNORE_EXCEPTIONS": True,
        },
    }
}
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
DJANGO_REDIS_LOGGER = "stockroom.cache"

# Sessions live in PostgreSQL, never in the cache (a Redis restart keeps everyone logged in).
SESSION_ENGINE = "django.contrib.sessions.backends.db"

# --- Celery -------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", redis_url_with_db("REDIS_URL", REDIS_URL, REDIS_BROKER_DB))
CELERY_QUEUE_PREFIX = env_str("CELERY_QUEUE_PREFIX", "stockroom")
CELERY_TASK_DEFAULT_QUEUE = f"{CELERY_QUEUE_PREFIX}.default"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 330)
# The longest task (a million-row import) is allowed this long; the broker's
# visibility timeout must stay above it or a running task is delivered twice.
CELERY_LONGEST_TASK_SECONDS = env_int("CELERY_LONGEST_TASK_SECONDS", 1800)
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 2 * CELERY_LONGEST_TASK_SECONDS)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "global_keyprefix": f"{CELERY_QUEUE_PREFIX}:",
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
# Celery's Django fixup closes a process's database connections after every task unless this
# many tasks have run since it last did. A worker process without the pool (bin/worker) keeps its
# connections as a web process does: never closed by the fixup, dropped by project/celery.py when
# past CONN_MAX_AGE, broken, or used by a failed task. Closing them made every task (every email)
# start a new PostgreSQL backend. With the pool, closing returns the connection to the pool.
CELERY_DB_REUSE_MAX = None if DB_POOL else 2**62
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = env_str("TIME_ZONE", "UTC")

# --- Outbox and batch jobs (project.outbox.services, project.outbox.relay, orders.jobs) -----------
# A message sent but not done within its lease is published again. Each task kind's lease is its
# own hard time limit (CELERY_TASK_TIME_LIMIT unless the task sets one) plus this margin for the
# queue wait (project.outbox.services.task_lease_seconds): an import's outlasts it, an email's is minutes.
# The Celery app the relay publishes with (the wiring's; the outbox package never imports it).
OUTBOX_CELERY_APP = "project.celery.app"
OUTBOX_LEASE_MARGIN_SECONDS = env_int("OUTBOX_LEASE_MARGIN_SECONDS", 120)
# The lease of a task the relay does not know, or of one without a time limit.
OUTBOX_LEASE_SECONDS = env_int("OUTBOX_LEASE_SECONDS", 900)
# Deliveries (or failures) before a message becomes `dead` and waits for staff in the admin.
OUTBOX_MAX_ATTEMPTS = env_int("OUTBOX_MAX_ATTEMPTS", 5)
OUTBOX_BATCH_SIZE = env_int("OUTBOX_BATCH_SIZE", 200)
# The relay wakes on NOTIFY at commit; this poll is the fallback (and picks up due retries).
OUTBOX_POLL_SECONDS = env_float("OUTBOX_POLL_SECONDS", 1.0)
OUTBOX_RETRY_BACKOFF_SECONDS = env_int("OUTBOX_RETRY_BACKOFF_SECONDS", 10)
OUTBOX_BROKER_BACKOFF_MAX_SECONDS = env_float("OUTBOX_BROKER_BACKOFF_MAX_SECONDS", 10.0)
OUTBOX_KEEP_DAYS = env_int("OUTBOX_KEEP_DAYS", 7)
OUTBOX_NOTIFY_CHANNEL = env_str("OUTBOX_NOTIFY_CHANNEL", "stockroom_outbox")
# NOTIFY serializes commits database-wide, so each process sends at most one per interval
# (project.outbox.services.outbox_notify_channel); 0 notifies with every message.
OUTBOX_NOTIFY_INTERVAL_MS = env_int("OUTBOX_NOTIFY_INTERVAL_MS", 100)
# After a round that found work (less than a full batch), the relay waits this long before the
# next, so under load the messages of that time go out together: a batch task's (order emails)
# as one Celery message. Not below OUTBOX_NOTIFY_INTERVAL_MS (rows whose NOTIFY was skipped).
OUTBOX_GATHER_MS = max(env_int("OUTBOX_GATHER_MS", 250), OUTBOX_NOTIFY_INTERVAL_MS)
# How long a task waits for its outbox row while the relay is still committing its batch.
OUTBOX_TASK_LOCK_TIMEOUT_MS = env_int("OUTBOX_TASK_LOCK_TIMEOUT_MS", 15_000)
EXPIRY_CHUNK_SIZE = env_int("EXPIRY_CHUNK_SIZE", 500)
BULK_FULFIL_CHUNK_SIZE = env_int("BULK_FULFIL_CHUNK_SIZE", 100)
# Batch jobs raise their statement timeout with SET LOCAL (reconciliation reads every row).
BATCH_STATEMENT_TIMEOUT_MS = env_int("BATCH_STATEMENT_TIMEOUT_MS", 600_000)

# --- Webhooks (project.webhooks: signed deliveries on their own queue, bin/webhooks) ---------------
# The webhooks worker consumes only this queue (bin/webhooks); bin/worker never does.
WEBHOOK_QUEUE = f"{CELERY_QUEUE_PREFIX}.webhooks"
# One attempt (resolve, connect, TLS, send, read the answer) gives up after this many seconds.
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 10.0)
# An attempt's claim lasts its timeout plus this margin; a worker killed mid-attempt leaves the
# claim to run out and the dispatcher hands the delivery out again (same webhook-id).
WEBHOOK_CLAIM_MARGIN_SECONDS = env_float("WEBHOOK_CLAIM_MARGIN_SECONDS", 30.0)
# A delivery handed to the queue is not handed out again for this long (a lost Celery message is).
WEBHOOK_DISPATCH_LEASE_SECONDS = env_float("WEBHOOK_DISPATCH_LEASE_SECONDS", 60.0)
# Beat asks this often whether a delivery is due, and runs the dispatcher if so (webhooks.tick, on
# the default queue); emits kick it too.
WEBHOOK_DISPATCH_SECONDS = env_int("WEBHOOK_DISPATCH_SECONDS", 5)
# A worker that finished a delivery takes its endpoint's next due one, up to this many in a row.
WEBHOOK_DELIVER_CHAIN = env_int("WEBHOOK_DELIVER_CHAIN", 100)
# Deliveries one dispatcher round hands out, at most.
WEBHOOK_DISPATCH_BATCH = env_int("WEBHOOK_DISPATCH_BATCH", 200)
# The answer's body is read up to this many bytes (an excerpt is kept with a failure), then closed.
WEBHOOK_RESPONSE_MAX_BYTES = env_int("WEBHOOK_RESPONSE_MAX_BYTES", 4096)
# Seconds to wait after each failed attempt (with jitter); the delivery fails after the last.
# Roughly Standard Webhooks / Svix: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about a day, 8 attempts).
WEBHOOK_RETRY_SCHEDULE_SECONDS = [
    float(seconds)
    for seconds in env_list("WEBHOOK_RETRY_SCHEDULE_SECONDS", ["5", "300", "1800", "7200", "18000", "36000", "36000"])
]
# An endpoint failing this many attempts in a row, for at least this many hours, is switched off
# (staff are emailed at STAFF_ALERT_EMAILS); a success resets the count.
WEBHOOK_DISABLE_AFTER_FAILURES = env_int("WEBHOOK_DISABLE_AFTER_FAILURES", 20)
WEBHOOK_DISABLE_AFTER_HOURS = env_float("WEBHOOK_DISABLE_AFTER_HOURS", 24.0)
# Plain http:// endpoints (development, tests); the production profile allows https only.
WEBHOOK_ALLOW_HTTP = env_bool("WEBHOOK_ALLOW_HTTP", True)
# Loopback, private, link-local, CGNAT... addresses are refused (SSRF) unless this is on.
WEBHOOK_ALLOW_PRIVATE_ADDRESSES = env_bool("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", False)
# stock.changed is coalesced per level over windows of this many seconds (inventory.events, run by beat).
WEBHOOK_STOCK_CHANGED_SECONDS = env_int("WEBHOOK_STOCK_CHANGED_SECONDS", 5)
# Finished deliveries (and the events left without any) are pruned after this many days (webhooks.prune).
WEBHOOK_KEEP_DAYS = env_int("WEBHOOK_KEEP_DAYS", 14)
# How often the webhooks worker counts deliveries by state for its gauge.
WEBHOOK_BACKLOG_SECONDS = env_float("WEBHOOK_BACKLOG_SECONDS", 10.0)
# Routed by name: the dispatcher and the deliveries run on the webhooks worker only.
CELERY_TASK_ROUTES = {
    "webhooks.dispatch": {"queue": WEBHOOK_QUEUE},
    "webhooks.deliver": {"queue": WEBHOOK_QUEUE},
}

# --- Auth -----------------------------------------------------------------------
AUTH_USER_MODEL = "users.User"
# Shopper pages; the admin keeps its own login at /admin/login/.
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
# The pepper keeps a leaked api-key table useless without the server's secret.
API_KEY_PEPPER = env_str("API_KEY_PEPPER", SECRET_KEY)
API_KEY_DEFAULT_DAYS = env_int("API_KEY_DEFAULT_DAYS", 365)
# No key lives longer than this (a longer request is refused; the default is capped to it).
API_KEY_MAX_DAYS = env_int("API_KEY_MAX_DAYS", 365)
# Live keys (not revoked, not expired) one user may hold: each key has its own rate budget.
API_KEYS_MAX_PER_USER = env_int("API_KEYS_MAX_PER_USER", 10)
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- REST API ---------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "users.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["project.api.renderers.OrjsonRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "project.api.negotiation.RememberingContentNegotiation",
    "DEFAULT_PARSER_CLASSES": ["project.api.parsers.JSONParser"],  # DRF's, deep nesting refused as 400
    "EXCEPTION_HANDLER": "project.http.error_views.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Stockroom API",
    "DESCRIPTION": "Orders and inventory that never oversell.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # 3.1 for its `webhooks` section: what each webhook event POSTs to a receiver (project.webhooks.payloads).
    "OAS_VERSION": "3.1.0",
    "WEBHOOKS": "project.webhooks.payloads.WEBHOOKS",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "project.api.schema.declare_uri_too_long",
    ],
}

# --- Shop -------------------------------------------------------------------------
SHOP_CURRENCY = env_str("SHOP_CURRENCY", "EUR")
ORDER_RESERVATION_MINUTES = env_int("ORDER_RESERVATION_MINUTES", 15)
ORDER_MAX_LINES = env_int("ORDER_MAX_LINES", 50)
ORDER_MAX_QUANTITY = env_int("ORDER_MAX_QUANTITY", 1000)
IDEMPOTENCY_LEASE_SECONDS = env_int("IDEMPOTENCY_LEASE_SECONDS", 30)
IDEMPOTENCY_KEEP_HOURS = env_int("IDEMPOTENCY_KEEP_HOURS", 24)
# With the `conditional` strategy, place an order in one round trip (orders/placement/placement.sql); off:
# the same steps through the ORM (the other strategies always go that way).
ORDER_PLACEMENT_IN_SQL = env_bool("ORDER_PLACEMENT_IN_SQL", True)
STOCK_RESERVATION_STRATEGY = env_str("STOCK_RESERVATION_STRATEGY", "conditional")
STAFF_ALERT_EMAILS = env_list("STAFF_ALERT_EMAILS", [])
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# /metrics without the token from loopback: only where the scraper is on this host and no proxy is
# in front (a proxy on this host makes every client loopback). Off in production (project.observability.checks).
METRICS_ALLOW_LOOPBACK = env_bool("METRICS_ALLOW_LOOPBACK", True)
# Mounts /_bench/trivial, the benchmark's ceiling view (`make bench` turns it on).
BENCH_ENDPOINTS = env_bool("BENCH_ENDPOINTS", False)
# `manage.py load_demo_data` creates a superuser with the published demo password: allowed in the
# development profiles (this one, tests), refused by project.settings.production unless --force.
DEMO_DATA_ALLOWED = True

# --- i18n, static -----------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)
# Uploaded import files (MEDIA_ROOT/imports/). Not served over HTTP. Workers read them from here,
# so with workers on other machines this is a shared volume.
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "var" / "media")))

# --- Stock imports (inventory.imports) ---------------------------------------------
# Rows per chunk transaction: the levels of one chunk stay locked while it is applied.
IMPORT_CHUNK_ROWS = env_int("IMPORT_CHUNK_ROWS", 20_000)
# A longer line is a row error (read with a bounded buffer: memory stays flat whatever the file).
IMPORT_MAX_LINE_BYTES = env_int("IMPORT_MAX_LINE_BYTES", 4096)
# The import's transactions raise their statement_timeout to this (SET LOCAL).
IMPORT_STATEMENT_TIMEOUT_MS = env_int("IMPORT_STATEMENT_TIMEOUT_MS", 600_000)
# Pause between chunks, leaving the levels to shoppers for a moment (0: none).
IMPORT_CHUNK_PAUSE_MS = env_int("IMPORT_CHUNK_PAUSE_MS", 0)
# An import's file is deleted when the import finishes; a daily job deletes what is left in
# MEDIA_ROOT/imports/ after this many days (a crash before the deletion, an upload without a job).
IMPORT_FILES_KEEP_DAYS = env_int("IMPORT_FILES_KEEP_DAYS", 7)

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
# The SMTP server (production's backend): host, port, login and TLS (STARTTLS) or SSL.
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
# Seconds the SMTP backend waits for the server before giving up (the task fails and is retried).
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "stockroom@localhost")

# --- Logging: JSON lines, each with the request id ---------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "project.observability.logs.RequestIdFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "celery": {"level": LOG_LEVEL},
    },
}

# --- Observability (project.observability.metrics, docs/operating.md) -------------------------
# Statements slower than this are logged (shape only, no parameters) and counted.
SLOW_QUERY_MS = env_float("SLOW_QUERY_MS", 200.0)
SLOW_QUERY_MAX_CHARS = env_int("SLOW_QUERY_MAX_CHARS", 2000)
# Celery workers and the outbox relay serve their own /metrics (0: off). One port per instance.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 9101)
RELAY_METRICS_PORT = env_int("RELAY_METRICS_PORT", 9102)
# Loopback by default: a Prometheus on another host needs 0.0.0.0 (and a firewall).
METRICS_BIND_ADDRESS = env_str("METRICS_BIND_ADDRESS", "127.0.0.1")
# How often the relay counts the outbox backlog, and web workers copy their pool's statistics.
OUTBOX_BACKLOG_SECONDS = env_float("OUTBOX_BACKLOG_SECONDS", 10.0)
DB_POOL_STATS_SECONDS = env_float("DB_POOL_STATS_SECONDS", 1.0)
# Staff may append ?profile=1 to a request for a pyinstrument profile of it.
PROFILING_ENABLED = env_bool("PROFILING_ENABLED", True)
# Who may profile: a callable taking the request (staff rights are the users app's to decide).
PROFILING_ALLOWED = "users.permissions.may_profile"
# Who may manage webhook endpoints and their deliveries (project.webhooks.api): a DRF permission class.
WEBHOOKS_STAFF_PERMISSION = "users.permissions.IsStaff"

# --- Schema changes without downtime (manage.py migrate, project.db.migrations, docs/operating.md) -----
# `manage.py migrate` waits at most this long for a lock, then gives the table back to the traffic
# queued behind its request and tries the migration again. Below DB_LOCK_TIMEOUT_MS, so a request
# queued behind a migration is slowed by at most this much, never failed. Its session has no
# statement_timeout (an index build or a data step may take minutes).
MIGRATION_LOCK_TIMEOUT_MS = env_int("MIGRATION_LOCK_TIMEOUT_MS", 1000)
# Retries of a migration that met a lock, after jittered pauses doubling from 0.25 s up to this cap.
MIGRATION_LOCK_RETRIES = env_int("MIGRATION_LOCK_RETRIES", 30)
MIGRATION_RETRY_MAX_PAUSE_SECONDS = env_float("MIGRATION_RETRY_MAX_PAUSE_SECONDS", 10.0)
# `make lint` runs django-migration-linter (manage.py lint_migrations) on these apps' migrations. It
# refuses what would break the release still running while a migration is applied: dropping or
# renaming a column or table, NOT NULL without a default, changing a column's type, a unique
# constraint on an existing table; its warnings (an index built without CONCURRENTLY, RunSQL or
# RunPython without a reverse) are refused too. It needs a live database (it runs sqlmigrate).
MIGRATION_LINTER_APPS = ["project", "users", "inventory", "orders"]
# The only way past the linter: "app_label.migration_name" -> why it cannot break the running release
# (never IgnoreMigration inside a migration: lint_migrations refuses it). The ones below ran in every
# database before the linter came; they stay as they ran.
MIGRATION_LINTER_EXEMPT = {
    "inventory.0003_importjob": "New tables only: NOT NULL is in the staging table's CREATE TABLE (RunSQL) and"
    " DROP TABLE in its reverse; no running release read them.",
    "inventory.0005_index_only_what_is_looked_up": "Plain CREATE INDEX on the ledger, from before the linter:"
    " writers queued while it built (today: AddIndexConcurrentlyRetrying in a non-atomic migration).",
    "inventory.0009_bucket_slots": "The bucket table came in 0008 of the same release; slot is backfilled and"
    " set NOT NULL with the SQL functions that write it, in one transaction; the unique index replaces one.",
    "inventory.0012_movement_txid": "Expand only: the DROP COLUMN is the reverse SQL (a rollback), the DROP"
    " INDEX drops only an INVALID leftover of a failed CONCURRENTLY build.",
    "orders.0004_expiry_index_with_id": "Plain DROP and CREATE INDEX on orders_order, from before the linter:"
    " writers queued while it built.",
    "orders.0012_shipments_and_returns": "Widens order.status to varchar(20) (no rewrite, old values fit);"
    " NOT NULL columns come with a default (no rewrite) or on new tables.",
    "orders.0015_allocation_backordered": "NOT NULL with DEFAULT 0 (no rewrite); the allocation index was built"
    " without CONCURRENTLY, from before the linter.",
    "project.0001_outbox": "New table: the linter misreads its partial indexes as indexes on an existing table.",
}

# --- Rate limits and other request guards (project.ratelimit.limiter, project.http.middleware) ----
# Rates are "requests/seconds" per caller (API key, else signed-in user, else client address).
RATELIMIT_ENABLED = env_bool("RATELIMIT_ENABLED", True)
RATELIMIT_READ = env_str("RATELIMIT_READ", "600/60")
RATELIMIT_WRITE = env_str("RATELIMIT_WRITE", "120/60")
RATELIMIT_AUTH = env_str("RATELIMIT_AUTH", "10/60")
RATELIMIT_ADMIN_LOGIN = env_str("RATELIMIT_ADMIN_LOGIN", "10/60")
# Proxies in front of gunicorn that append to X-Forwarded-For; 0 means REMOTE_ADDR is the client.
RATELIMIT_TRUSTED_PROXIES = env_int("RATELIMIT_TRUSTED_PROXIES", 0)
# Unsafe requests under these path prefixes are the `auth` group (fails closed without Redis).
RATELIMIT_AUTH_PATHS = env_list(
    "RATELIMIT_AUTH_PATHS",
    ["/api/v1/auth/tokens", "/accounts/login/", "/accounts/signup/", "/accounts/password-reset/"],
)
RATELIMIT_ADMIN_LOGIN_PATH = env_str("RATELIMIT_ADMIN_LOGIN_PATH", "/admin/login/")
RATELIMIT_EXEMPT_PATHS = ["/healthz", "/readyz", "/metrics"]  # and STATIC_URL
# Turns an Authorization header into (key prefix, proof of the whole key), or None: a bearer key's
# own budget is charged only once its proof matched (project.ratelimit.limiter).
RATELIMIT_BEARER_CLAIM = "users.keys.ratelimit_claim"
RATELIMIT_REDIS_URL = env_str("RATELIMIT_REDIS_URL", REDIS_URL)
RATELIMIT_REDIS_TIMEOUT = env_float("RATELIMIT_REDIS_TIMEOUT", 0.3)
# Bodies larger than this are refused with 413 from Content-Length, before anything reads them.
MAX_REQUEST_BODY_BYTES = env_int("MAX_REQUEST_BODY_BYTES", DATA_UPLOAD_MAX_MEMORY_SIZE)
IMPORT_MAX_UPLOAD_BYTES = env_int("IMPORT_MAX_UPLOAD_BYTES", 200 * 1024 * 1024)
# The API's upload and the admin's upload form (inventory.admin.imports.ImportJobAdmin.upload_view).
IMPORT_UPLOAD_PATHS = env_list("IMPORT_UPLOAD_PATHS", ["/api/v1/imports", "/admin/inventory/importjob/upload/"])
# Our pages load nothing from elsewhere. Swagger UI (served from our static files) needs inline
# script and style, so its page alone gets them.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)
CONTENT_SECURITY_POLICY_API_DOCS = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; base-uri 'self'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)
CONTENT_SECURITY_POLICY_API_DOCS_PATH = "/api/docs/"
