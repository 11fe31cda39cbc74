"""Settings from the environment, with embedded defaults: SQLite and the in-memory layer.

DATABASE_URL switches to PostgreSQL (or any dj-database-url URL), REDIS_URL to channels-redis.
Every variable is read through randomchat.env, and a setting read from one bears its name;
docs/DEPLOYMENT.md documents each (tests/face/test_deployment.py holds the two together).
"""

import os
import tempfile
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_float, env_int, env_list, env_rate, env_str
from .stomp.parser import DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_HEADER_LINE, DEFAULT_MAX_HEADERS

BASE_DIR = Path(__file__).resolve().parent.parent


# DEBUG is on only in development: an explicit DJANGO_DEBUG=1, never by default in production.
DEBUG = env_bool("DJANGO_DEBUG", False)
RANDOMCHAT_PRODUCTION = env_bool("RANDOMCHAT_PRODUCTION", False)

SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if RANDOMCHAT_PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when RANDOMCHAT_PRODUCTION is on")
    # Django's own prefix for a key it generated for development: `check --deploy` flags it.
    SECRET_KEY = "django-insecure-randomchat-development-key-not-for-production-use-0123456789"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

# Read in every mode, so that every variable is read (randomchat.env); in force in production.
RANDOMCHAT_SSL_REDIRECT = env_bool("RANDOMCHAT_SSL_REDIRECT", True)
RANDOMCHAT_HSTS_SECONDS = env_int("RANDOMCHAT_HSTS_SECONDS", 365 * 24 * 3600)
if RANDOMCHAT_PRODUCTION:
    # Behind a TLS-terminating proxy (docs/DEPLOYMENT.md); health checks stay plain HTTP.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = RANDOMCHAT_SSL_REDIRECT
    SECURE_HSTS_SECONDS = RANDOMCHAT_HSTS_SECONDS
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
# daphne's access log (client IP addresses): a file, or "-" for stdout; empty is off (accesslog.py).
RANDOMCHAT_ACCESS_LOG = env_str("RANDOMCHAT_ACCESS_LOG", "")
# Who may read /metrics and the reasons of a failed /healthz (probes.py): a bearer token, or
# peer addresses/networks when no proxy header says the request came through one.
RANDOMCHAT_METRICS_TOKEN = env_str("RANDOMCHAT_METRICS_TOKEN", "")
RANDOMCHAT_METRICS_ALLOW = env_list("RANDOMCHAT_METRICS_ALLOW", ["127.0.0.1", "::1"])
# Seconds /healthz waits for the database and the channel layer before it says unavailable.
RANDOMCHAT_HEALTHZ_TIMEOUT = env_float("RANDOMCHAT_HEALTHZ_TIMEOUT", 2)
# Extra WebSocket origins allowed besides the host itself (e.g. https://chat.example.com).
RANDOMCHAT_ALLOWED_ORIGINS = env_list("RANDOMCHAT_ALLOWED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "matching",
    "dialogs",
    "moderation",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves /static/ under daphne too (no separate web server needed).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "randomchat.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "randomchat" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "randomchat.asgi.application"

DATABASE_URL = env_str("DATABASE_URL", "")
RANDOMCHAT_SQLITE_PATH = env_str("RANDOMCHAT_SQLITE_PATH", str(BASE_DIR / "db.sqlite3"))
# Test databases are per test run (pid), so that concurrent runs on one machine never share one.
_TEST_DB_SUFFIX = f"{os.getpid()}"
# A file, so that a daphne process started by the tests shares the test database.
RANDOMCHAT_SQLITE_TEST_PATH = env_str(
    "RANDOMCHAT_SQLITE_TEST_PATH", f"{tempfile.gettempdir()}/randomchat-test-{_TEST_DB_SUFFIX}.sqlite3"
)
if DATABASE_URL:
    # Persistent connections: channels' database_sync_to_async closes a connection after
    # every call unless it may live on, and a new PostgreSQL connection per action is slow.
    # Health checks replace a connection that broke (a database restart) on its next use; our
    # backend (randomchat.postgresql) sends one only when the socket has news.
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=600, conn_health_checks=True,
                                                  engine="randomchat.postgresql")}
    DATABASES["default"]["TEST"] = {"NAME": f"test_randomchat_{_TEST_DB_SUFFIX}"}
    # Parameters bound by the server, and a statement run 5 times on a connection prepared
    # (psycopg's default threshold; Django's default is off): pairing's statements are the
    # same every time, and planning them again was a good part of an idle pair's time
    # (bench/README.md). A pooler must be in session mode (docs/DEPLOYMENT.md).
    # A prepared statement keeps one generic plan: PostgreSQL's default tries a fresh plan
    # per run first and kept doing so for pairing's statements (the rematch look-up planned
    # in 0.85 ms and ran in 0.03). Every statement run that often here is a fixed, indexed one.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        server_side_binding=True, prepare_threshold=5, options="-c plan_cache_mode=force_generic_plan"
    )
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": RANDOMCHAT_SQLITE_PATH,
            "CONN_MAX_AGE": None,
            # IMMEDIATE: racing writers wait for the lock instead of failing mid-transaction.
            # WAL with synchronous=NORMAL: a commit does not wait for fsync (durable across a
            # crash of randomchat; the last commits may be lost on power loss).
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": RANDOMCHAT_SQLITE_TEST_PATH},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "")
# Messages a channel holds for its consumer, in Redis or in memory.
LAYER_CAPACITY = 1000
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "randomchat.layers.RedisChannelLayer",
            "CONFIG": {
                # redis-py's default socket timeout (5 s) equals channels-redis's blocking read
                # (5 s): an idle connection's receive would then fail with TimeoutError.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}],
                "capacity": LAYER_CAPACITY,
                "expiry": 30,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": LAYER_CAPACITY}}}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [
    BASE_DIR / "randomchat" / "static",
    # The page's one library, installed from web/package-lock.json by `npm ci` (bin/serve).
    ("vendor/stompjs", BASE_DIR / "web" / "node_modules" / "@stomp" / "stompjs" / "bundles"),
]
# WhiteNoise serves the finders' files directly, so the page works with or without collectstatic.
WHITENOISE_USE_FINDERS = True

# The STOMP layer. Every limit can be set from the environment.
# The server's heart-beat wish (ms): (RANDOMCHAT_HEARTBEAT_SEND_MS, RANDOMCHAT_HEARTBEAT_RECEIVE_MS).
RANDOMCHAT_HEARTBEAT = (
    env_int("RANDOMCHAT_HEARTBEAT_SEND_MS", 10000),
    env_int("RANDOMCHAT_HEARTBEAT_RECEIVE_MS", 10000),
)
# Silent client heart-beat intervals before the connection is dropped.
RANDOMCHAT_HEARTBEAT_GRACE = env_float("RANDOMCHAT_HEARTBEAT_GRACE", 3)
RANDOMCHAT_CONNECT_TIMEOUT = env_float("RANDOMCHAT_CONNECT_TIMEOUT", 10)
# Seconds a frame may take from its first byte to its NUL; 0 = no limit.
RANDOMCHAT_FRAME_TIMEOUT = env_float("RANDOMCHAT_FRAME_TIMEOUT", 30)
# Seconds a connection with heart-beats off may send nothing while it is in no dialog and
# not in the pool; 0 = no limit.
RANDOMCHAT_IDLE_TIMEOUT = env_float("RANDOMCHAT_IDLE_TIMEOUT", 300)
# Bytes one connection may make the server hold: the frame being received, the frames of
# its open transactions and the events waiting for its SUBSCRIBE (stomp_consumer.held_size).
RANDOMCHAT_MAX_CONNECTION_BYTES = env_int("RANDOMCHAT_MAX_CONNECTION_BYTES", 256 * 1024)
RANDOMCHAT_MAX_FRAME_SIZE = env_int("RANDOMCHAT_MAX_FRAME_SIZE", DEFAULT_MAX_FRAME_SIZE)
RANDOMCHAT_MAX_HEADERS = env_int("RANDOMCHAT_MAX_HEADERS", DEFAULT_MAX_HEADERS)
RANDOMCHAT_MAX_HEADER_LINE = env_int("RANDOMCHAT_MAX_HEADER_LINE", DEFAULT_MAX_HEADER_LINE)
RANDOMCHAT_MAX_PENDING_EVENTS = env_int("RANDOMCHAT_MAX_PENDING_EVENTS", 100)
RANDOMCHAT_MAX_SUBSCRIPTIONS = env_int("RANDOMCHAT_MAX_SUBSCRIPTIONS", 16)
RANDOMCHAT_MAX_TRANSACTIONS = env_int("RANDOMCHAT_MAX_TRANSACTIONS", 8)
RANDOMCHAT_MAX_TRANSACTION_FRAMES = env_int("RANDOMCHAT_MAX_TRANSACTION_FRAMES", 64)

# The chat.
RANDOMCHAT_MAX_CONTENT_LENGTH = env_int("RANDOMCHAT_MAX_CONTENT_LENGTH", 4096)

RANDOMCHAT_LOG_LEVEL = env_str("RANDOMCHAT_LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"no_client_text": {"()": "randomchat.logfilters.ClientTextFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["no_client_text"]}
    },
    "root": {"handlers": ["console"], "level": RANDOMCHAT_LOG_LEVEL},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}
# Each process beats this often (s); one silent for RANDOMCHAT_PROCESS_TIMEOUT is dead and
# its users are released (their partners get 30 "disconnect").
RANDOMCHAT_PROCESS_HEARTBEAT = env_float("RANDOMCHAT_PROCESS_HEARTBEAT", 5)
RANDOMCHAT_PROCESS_TIMEOUT = env_float("RANDOMCHAT_PROCESS_TIMEOUT", 20)
# PROTOCOL.md §7.3: a user who has waited this long (s) leaves the pool with 30 "timeout";
# 0 = never. Checked by the process that holds the user, once per heartbeat.
RANDOMCHAT_MAX_WAIT = env_float("RANDOMCHAT_MAX_WAIT", 600)
# PROTOCOL.md §7.2: two connections whose dialog ended within this many seconds are not
# paired with each other again (they keep waiting); 0 = no such rule.
RANDOMCHAT_REMATCH_WINDOW = env_float("RANDOMCHAT_REMATCH_WINDOW", 300)
# On PostgreSQL + Redis, a pair's 10 for a connection of another process rides on the
# pairing's commit as a NOTIFY instead of the channel layer (randomchat/pair_notify.py).
RANDOMCHAT_PAIR_NOTIFY = env_bool("RANDOMCHAT_PAIR_NOTIFY", True)
# On PostgreSQL, a /start alone in its batch is stored by the event loop on a connection of
# its own instead of on the database thread (randomchat/loop_database.py).
RANDOMCHAT_PAIR_ON_LOOP = env_bool("RANDOMCHAT_PAIR_ON_LOOP", True)
# The longest grace a connection may ask for with CONNECT's resume-grace (PROTOCOL.md §7.1); 0 = no resume.
RANDOMCHAT_RESUME_GRACE_MAX = env_int("RANDOMCHAT_RESUME_GRACE_MAX", 120)

# Per-connection rate limits (token buckets keyed on the connection, never on a client field):
# (tokens per second, burst). Past the limit an action gets its x1 event `rate_limited`;
# RANDOMCHAT_RATE_ABUSE_LIMIT refusals in a row close the connection with ERROR.
RANDOMCHAT_RATE_START = env_rate("RANDOMCHAT_RATE_START", 1, 5)
RANDOMCHAT_RATE_MESSAGE = env_rate("RANDOMCHAT_RATE_MESSAGE", 10, 30)
RANDOMCHAT_RATE_ABUSE_LIMIT = env_int("RANDOMCHAT_RATE_ABUSE_LIMIT", 50)
# Every STOMP frame a connection sends, heart-beats included: (per second, burst). The frame
# that finds the bucket empty closes the connection with ERROR. The inbound pacing below
# slows a client down long before that, so only sustained abuse reaches it.
RANDOMCHAT_RATE_FRAME = env_rate("RANDOMCHAT_RATE_FRAME", 20, 200)
# Inbound pacing (randomchat/inbound.py): a connection past its budget of WebSocket frames
# or bytes, (per second, burst), or with this many messages waiting for the application,
# is not read until the budget refills or the queue drains; nothing is dropped.
RANDOMCHAT_INBOUND_FRAMES = env_rate("RANDOMCHAT_INBOUND_FRAMES", 50, 100)
RANDOMCHAT_INBOUND_BYTES = env_rate("RANDOMCHAT_INBOUND_BYTES", 256 * 1024, 1024 * 1024)
RANDOMCHAT_INBOUND_QUEUE = env_int("RANDOMCHAT_INBOUND_QUEUE", 32)
# How long a connection holds a dialog's event that came before an earlier one (seconds):
# past that, the earlier one is taken as lost (a process died between commit and send).
RANDOMCHAT_ORDER_GAP_SECONDS = env_float("RANDOMCHAT_ORDER_GAP_SECONDS", 5)
# How long a notice is tried again, in the background, while the channel layer (Redis) is
# unavailable; the actions of the chat are refused with `unavailable` meanwhile.
RANDOMCHAT_LAYER_RETRY_SECONDS = env_float("RANDOMCHAT_LAYER_RETRY_SECONDS", 300)
# Slow readers: a connection whose unsent bytes pass this bound, or whose send buffer stays
# full this long, is closed (Spring: 512 KiB, 10 s).
RANDOMCHAT_SLOW_READER_BYTES = env_int("RANDOMCHAT_SLOW_READER_BYTES", 512 * 1024)
RANDOMCHAT_SLOW_READER_SECONDS = env_float("RANDOMCHAT_SLOW_READER_SECONDS", 10)

# Moderation (moderation/). /report per connection: (per second, burst).
RANDOMCHAT_RATE_REPORT = env_rate("RANDOMCHAT_RATE_REPORT", 0.1, 5)
# Proxies (addresses or networks) whose X-Forwarded-For entry names the client; the socket's
# peer otherwise. Addresses are kept only as an HMAC keyed by RANDOMCHAT_ADDRESS_KEY (default:
# derived from SECRET_KEY; set it so that bans outlive a SECRET_KEY rotation).
RANDOMCHAT_TRUSTED_PROXIES = env_list("RANDOMCHAT_TRUSTED_PROXIES", [])
RANDOMCHAT_ADDRESS_KEY = env_str("RANDOMCHAT_ADDRESS_KEY", "")
