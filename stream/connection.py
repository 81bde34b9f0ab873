"""How every process reaches Kafka and Redis: the one place that turns the
security settings (TIERSTREAM_KAFKA_*, TIERSTREAM_REDIS_*: stream.settings)
into client options, and the only module that constructs a Kafka or Redis
client. tests/unit/test_connection.py fails if another module builds one
itself, so a client added later cannot miss the credentials.

- `KafkaAccess`: bootstrap servers + aiokafka's security options; makes
  consumers, producers and admin clients. Faust's own clients get the same
  through `faust_credentials` (app.conf.broker_credentials).
- `RedisAccess`: URL (redis:// or rediss://) + ACL user, password and TLS
  files; makes redis.asyncio clients.
- `kafka_problem` / `redis_problem`: connect once and say, in words that
  name the setting to fix, why it fails (unknown CA, a name the broker's
  certificate does not hold, a refused password, a missing client
  certificate). aiokafka itself only says "Unable to bootstrap", and Faust
  retries that for ever.

Secrets are SecretStr in Settings and stay out of every repr here.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, SaslAuthenticationFailed
from aiokafka.helpers import create_ssl_context
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from stream.settings import Settings

# The client classes tests/unit/test_connection.py looks for outside this module.
KAFKA_CLIENT_CLASSES = ("AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient", "AIOKafkaClient")


def _ssl_context(cafile: Any, certfile: Any, keyfile: Any, check_hostname: bool) -> ssl.SSLContext:
    # No CA file: the system's trust store (managed clusters use public CAs).
    context = create_ssl_context(cafile=cafile, certfile=certfile, keyfile=keyfile)
    context.check_hostname = check_hostname
    return context


@dataclass(frozen=True)
class KafkaAccess:
    bootstrap: str  # host:port[,host:port]
    # security_protocol, ssl_context, sasl_mechanism, sasl_plain_username, sasl_plain_password
    auth: Mapping[str, Any] = field(default_factory=lambda: {"security_protocol": "PLAINTEXT"}, repr=False)

    @classmethod
    def plain(cls, bootstrap: str) -> KafkaAccess:
        """A broker this process started itself (dev, tests, benchmarks): no security."""
        return cls(bootstrap)

    @property
    def protocol(self) -> str:
        return str(self.auth.get("security_protocol", "PLAINTEXT"))

    def consumer(self, *topics: str, **options: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(*topics, bootstrap_servers=self.bootstrap, **self.auth, **options)

    def producer(self, **options: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(bootstrap_servers=self.bootstrap, **self.auth, **options)

    def admin(self, **options: Any) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self.auth, **options)


def kafka_access(settings: Settings) -> KafkaAccess:
    protocol = settings.kafka_security_protocol
    auth: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        auth["ssl_context"] = _ssl_context(settings.kafka_ssl_cafile, settings.kafka_ssl_certfile,
                                           settings.kafka_ssl_keyfile, settings.kafka_ssl_check_hostname)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        auth["sasl_mechanism"] = settings.kafka_sasl_mechanism
        auth["sasl_plain_username"] = settings.kafka_sasl_username
        auth["sasl_plain_password"] = settings.kafka_password()
    return KafkaAccess(settings.broker, auth)


def faust_credentials(access: KafkaAccess) -> Any:
    """The same security for Faust's consumer, producer and topic creator
    (faust.auth: its aiokafka driver turns these back into `access.auth`)."""
    from faust.auth import SASLCredentials, SSLCredentials

    if access.protocol == "SSL":
        return SSLCredentials(access.auth["ssl_context"])
    if access.protocol.startswith("SASL_"):
        # Faust's SASLCredentials is SASL_SSL exactly when it has a context.
        return SASLCredentials(username=access.auth["sasl_plain_username"],
                               password=access.auth["sasl_plain_password"],
                               ssl_context=access.auth.get("ssl_context"), mechanism=access.auth["sasl_mechanism"])
    return None


def kafka_access_of_app(app: Any) -> KafkaAccess:
    """The access a Faust app was built with, for the direct aiokafka clients
    of stream.faust_ext (recovery), which only see the app."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    bootstrap = ",".join(f"{url.host}:{url.port or 9092}" for url in app.conf.broker)
    return KafkaAccess(bootstrap, credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context))


@dataclass(frozen=True)
class RedisAccess:
    url: str
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def plain(cls, url: str) -> RedisAccess:
        """A Redis this process started itself: no TLS, no ACL user."""
        return cls(url)

    def client(self, **options: Any) -> Redis:
        return Redis.from_url(self.url, **self.options, **options)

    @property
    def where(self) -> str:
        """The URL without user or password, for messages."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


def redis_access(settings: Settings) -> RedisAccess:
    options: dict[str, Any] = {}
    if settings.redis_username:
        options["username"] = settings.redis_username
    password = settings.redis_password_value()
    if password:
        options["password"] = password
    if settings.redis_url.startswith("rediss://"):
        options |= {"ssl_ca_certs": str(settings.redis_ssl_cafile) if settings.redis_ssl_cafile else None,
                    "ssl_certfile": str(settings.redis_ssl_certfile) if settings.redis_ssl_certfile else None,
                    "ssl_keyfile": str(settings.redis_ssl_keyfile) if settings.redis_ssl_keyfile else None,
                    "ssl_check_hostname": settings.redis_ssl_check_hostname,
                    "ssl_cert_reqs": "required"}
    return RedisAccess(settings.redis_url, options)


# -- why a connection fails, in words ---------------------------------------

@dataclass(frozen=True)
class AccessProblem:
    message: str
    # A refused login or a failed certificate check does not mend itself;
    # a server that is down or still starting does.
    lasting: bool = True

    def __str__(self) -> str:
        return self.message


def _tls_reason(exc: BaseException, ca_setting: str, hostname_setting: str) -> str | None:
    text = str(exc)
    if "mismatch" in text and (name := re.search(r"not valid for '([^']+)'", text)):
        return (f"the server's certificate is not valid for {name.group(1)!r}, the name connected to; connect by "
                f"a name the certificate holds, or (tests only) set {hostname_setting}=false")
    if "certificate verify failed" in text or isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the server's certificate is not signed by a CA this client trusts ({text}); "
                f"set {ca_setting} to the CA file that signed it")
    if "wrong version number" in text or "record layer failure" in text or "packet length too long" in text:
        return "the server does not speak TLS on this port; check the port or the security protocol setting"
    if isinstance(exc, ssl.SSLError):
        return f"the TLS handshake failed ({text})"
    return None


async def kafka_problem(access: KafkaAccess, timeout_ms: int = 10_000) -> AccessProblem | None:
    """None if the first reachable bootstrap server accepts this access,
    else why not, naming the setting to fix."""
    reasons = []
    for server in access.bootstrap.split(","):
        host, _, port = server.rpartition(":")
        try:
            conn = await create_conn(host, int(port), request_timeout_ms=timeout_ms, **access.auth)
        except SaslAuthenticationFailed as exc:
            return AccessProblem(f"Kafka at {server} refused the SASL login of user {access.auth.get('sasl_plain_username')!r} "
                    f"with {access.auth.get('sasl_mechanism')}: wrong user name or password "
                    f"(TIERSTREAM_KAFKA_SASL_USERNAME, TIERSTREAM_KAFKA_SASL_PASSWORD[_FILE]) or a mechanism "
                                 f"the broker does not enable (TIERSTREAM_KAFKA_SASL_MECHANISM) [{exc}]")
        except (ssl.SSLError, ssl.CertificateError) as exc:
            reason = _tls_reason(exc, "TIERSTREAM_KAFKA_SSL_CAFILE", "TIERSTREAM_KAFKA_SSL_CHECK_HOSTNAME")
            return AccessProblem(f"Kafka at {server}: {reason}")
        except KafkaConnectionError as exc:
            hint = ("it may want a client certificate (TIERSTREAM_KAFKA_SSL_CERTFILE and _KEYFILE)"
                    if access.protocol == "SSL" else
                    "it may want another security protocol (TIERSTREAM_KAFKA_SECURITY_PROTOCOL: PLAINTEXT, "
                    "SSL, SASL_PLAINTEXT, SASL_SSL)")
            return AccessProblem(f"Kafka at {server} closed the connection during the handshake ({exc}): {hint}")
        except (OSError, KafkaError, TimeoutError) as exc:
            reasons.append(f"{server}: {type(exc).__name__}: {exc}")
            continue
        conn.close()
        return None
    return AccessProblem("cannot reach Kafka (TIERSTREAM_BROKER): " + "; ".join(reasons), lasting=False)


async def redis_problem(access: RedisAccess) -> AccessProblem | None:
    """None if Redis answers a PING with this access, else why not."""
    client = access.client(socket_connect_timeout=5, socket_timeout=5)
    try:
        await client.ping()
    except redis_errors.AuthenticationError as exc:
        return AccessProblem(f"Redis at {access.where} refused the login ({exc}): check TIERSTREAM_REDIS_USERNAME "
                             f"and TIERSTREAM_REDIS_PASSWORD[_FILE] (or the user and password in TIERSTREAM_REDIS_URL)")
    except redis_errors.ResponseError as exc:
        if "NOAUTH" in str(exc) or "NOPERM" in str(exc):
            return AccessProblem(f"Redis at {access.where} wants a login or more permissions ({exc}): check "
                                 f"TIERSTREAM_REDIS_USERNAME and TIERSTREAM_REDIS_PASSWORD[_FILE]")
        return AccessProblem(f"Redis at {access.where}: {exc}")
    except redis_errors.ConnectionError as exc:
        cause = exc.__cause__ or exc.__context__
        reason = _tls_reason(cause or exc, "TIERSTREAM_REDIS_SSL_CAFILE", "TIERSTREAM_REDIS_SSL_CHECK_HOSTNAME")
        if reason is None and "certificate" in str(exc):
            reason = _tls_reason(ssl.SSLCertVerificationError(str(exc)), "TIERSTREAM_REDIS_SSL_CAFILE",
                                 "TIERSTREAM_REDIS_SSL_CHECK_HOSTNAME")
        if reason is None and access.url.startswith("redis://") and "Connection reset" in str(exc):
            reason = "the server may want TLS: use a rediss:// URL"
        return AccessProblem(f"Redis at {access.where}: {reason or exc}", lasting=reason is not None)
    finally:
        await client.aclose()
    return None
