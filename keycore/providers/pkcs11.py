"""PKCS#11 HSMs: tenant keys wrapped by AES-GCM inside the HSM (C_Encrypt / C_Decrypt).

The KEK is an AES-256 secret key object on a token, found by its label; it never
leaves the HSM. KeyCore asks the token to encrypt the tenant key with
``CKM_AES_GCM``, a random 96-bit IV chosen by KeyCore and associated data that
binds the blob to its header, tenant and key version, so a blob moved to another
tenant or version fails like a tampered one.

Wrapped layout, 62 bytes for a 32-byte tenant key::

    offset  size  field
         0     1  kind        0x11
         1     1  version     0x01 (AES-GCM, 96-bit IV, 128-bit tag)
         2    12  iv          random
        14  n+16  ciphertext  CKM_AES_GCM(KEK, iv, tenant key, aad), tag last

    aad = bytes 0..1 of the blob (kind, version) || WrapContext.associated_data()

A later version can carry another mechanism (CKM_AES_KEY_WRAP_PAD for HSMs whose
GCM insists on generating the IV itself) without touching stored blobs.

The PKCS#11 module is process-wide: python-pkcs11 keeps one ``lib`` per path and
initialises it once (``C_Initialize`` without locking callbacks, which tells the
module that calls are not made concurrently). So this module keeps one record
per real module path, with one worker thread that makes every call into the
module (so calls never overlap, and a caller waits at most the provider's
timeout even when an HSM hangs: PKCS#11 itself has no timeouts), and one
logged-in session per token, shared by the configurations that use the same
token *and* the same PIN (PKCS#11 login state belongs to the process and the
token, not to a session). A configuration with a different PIN logs the token
out and in again with its own PIN, so a wrong PIN is never hidden by a right one.
A PIN the token rejected is not tried again by the same provider instance:
health checks must not lock the token. Tokens created after the module was
loaded are found by re-initialising the module, at most once a minute.

Operators choose which modules may be loaded: ``KEYCORE_PKCS11_MODULES`` (Django
setting or environment variable, paths separated by ``os.pathsep``); when it is
set, any other module path is refused. Loading a module runs its code in
KeyCore's process, so a *tenant's* configuration needs the list outside the
embedded default (:meth:`Pkcs11Provider.check_tenant_settings`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pkcs11
from django.conf import settings as django_settings
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.mechanisms import GCMParams

from keycore import errors
from keycore.providers.base import HealthResult, KeyProvider, SettingField, WrapContext
from keycore.providers.retry import DEFAULT_POLICY, RetryPolicy, call_with_retry

T = TypeVar("T")

PKCS11_WRAP_KIND = 0x11
PKCS11_WRAP_V1 = 1
HEADER = bytes((PKCS11_WRAP_KIND, PKCS11_WRAP_V1))
IV_BYTES = 12
TAG_BYTES = 16
KEK_BYTES = 32
MAX_TOKEN_LABEL_BYTES = 32  # CK_TOKEN_INFO.label
RESCAN_INTERVAL = 60.0  # seconds between re-initialisations looking for a new token
ALLOWED_MODULES_SETTING = "KEYCORE_PKCS11_MODULES"

# errors after which the session is gone and a new one may work
_SESSION_LOST = (
    p11.SessionHandleInvalid,
    p11.SessionClosed,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.TokenNotRecognised,
    p11.UserNotLoggedIn,
    p11.OperationActive,
)
# errors that may pass: the device or its link hiccuped
_TRANSIENT = (
    p11.DeviceError,
    p11.DeviceMemory,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.FunctionFailed,
    p11.SessionCount,
    p11.HostMemory,
)
# what the HSM says about a ciphertext that does not authenticate (SoftHSM2 answers CKR_GENERAL_ERROR)
_NOT_AUTHENTIC = (
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.GeneralError,
    p11.DataLenRange,
    p11.SignatureInvalid,
)
_KEY_FUNCTION_NOT_PERMITTED = "0x68"  # CKR_KEY_FUNCTION_NOT_PERMITTED, which python-pkcs11 leaves unmapped


@dataclass
class _TokenSession:
    session: Any
    pin_digest: bytes
    slot: Any
    keys: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Module:
    path: str
    lib: Any
    #: the one thread that calls into the module
    worker: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="keycore-pkcs11")
    )
    sessions: dict[str, _TokenSession] = field(default_factory=dict)
    last_rescan: float = 0.0

    def run(self, call: Callable[[], T], *, timeout: float, what: str) -> T:
        """``call()`` on the module's thread; ``KmsTimeout`` if it is not done within ``timeout`` seconds."""
        future = self.worker.submit(call)
        try:
            return future.result(timeout=timeout)
        except FuturesTimeout:
            future.cancel()  # still queued behind a hung call: never start it
            raise errors.KmsTimeout(f"The HSM did not finish {what} within {timeout:g}s.") from None

    def drop(self, token_label: str) -> None:
        state = self.sessions.pop(token_label, None)
        if state is not None:
            with contextlib.suppress(p11.PKCS11Error):  # the session may already be gone
                state.session.close()

    def rescan(self) -> bool:
        """Re-initialise the module so it sees tokens created since; at most once a minute."""
        if time.monotonic() - self.last_rescan < RESCAN_INTERVAL:
            return False
        self.last_rescan = time.monotonic()
        for label in list(self.sessions):
            self.drop(label)
        try:
            self.lib.reinitialize()
        except p11.PKCS11Error:
            return False
        return True


_MODULES: dict[str, _Module] = {}
#: sessions remember which PIN logged them in by an HMAC under this per-process key, not by the PIN
_PIN_DIGEST_KEY = os.urandom(32)
_MODULES_LOCK = threading.Lock()


def allowed_modules() -> list[str] | None:
    """The operator's list of loadable module paths, or None when any may be loaded."""
    value: Any = None
    if django_settings.configured:
        value = getattr(django_settings, ALLOWED_MODULES_SETTING, None)
    if value is None:
        value = os.environ.get(ALLOWED_MODULES_SETTING)
    if not value:
        return None
    paths = value.split(os.pathsep) if isinstance(value, str) else list(value)
    return [os.path.realpath(p.strip()) for p in paths if p.strip()]


def tenant_module_problem(path: str) -> str:
    """Why a *tenant's* configuration may not load ``path``, or "" if it may.

    Only modules the operator lists are loaded for tenants; with no list, any is, but only
    in the embedded default (a developer's machine), never in production.
    """
    allowed = allowed_modules()
    if allowed is None:
        if django_settings.EMBEDDED:
            return ""
        return f"The operator has not allowed any PKCS#11 module for tenants ({ALLOWED_MODULES_SETTING})."
    if os.path.realpath(path) not in allowed:
        return f"{path} is not one of the PKCS#11 modules the operator allows."
    return ""


def module_problem(path: str) -> str:
    """Why ``path`` cannot be used as a PKCS#11 module, or "" if it can."""
    if not os.path.isabs(path):
        return "Enter the absolute path of the PKCS#11 module (.so) on the KeyCore servers."
    if not os.path.isfile(path):
        return f"There is no file {path} on this KeyCore server."
    if not os.access(path, os.R_OK):
        return f"KeyCore may not read {path}."
    allowed = allowed_modules()
    if allowed is not None and os.path.realpath(path) not in allowed:
        return f"{path} is not one of the PKCS#11 modules the operator allows ({ALLOWED_MODULES_SETTING})."
    return ""


def _module(path: str) -> _Module:
    real = os.path.realpath(path)
    allowed = allowed_modules()
    if allowed is not None and real not in allowed:
        raise errors.KmsMisconfigured(f"{path} is not one of the PKCS#11 modules the operator allows.")
    with _MODULES_LOCK:
        module = _MODULES.get(real)
        if module is None:
            problem = module_problem(path)
            if problem:
                raise errors.KmsMisconfigured(problem)
            try:
                # one lib per real path: two spellings of one path would initialise the module twice
                lib = pkcs11.lib(real)
            except (p11.PKCS11Error, OSError) as exc:
                raise errors.KmsMisconfigured(f"Cannot load the PKCS#11 module {path}: {exc}") from None
            module = _MODULES[real] = _Module(real, lib)
        return module


class Pkcs11Provider(KeyProvider):
    """Wraps tenant keys with an AES-256 key in a PKCS#11 token (HSM)."""

    name = "pkcs11"
    label = "PKCS#11 HSM"
    fields = (
        SettingField(
            "module_path",
            "PKCS#11 module",
            help="Absolute path of the HSM vendor's PKCS#11 library on the KeyCore servers, "
            "e.g. /usr/lib/softhsm/libsofthsm2.so.",
        ),
        SettingField("token_label", "Token label", help="The label of the token (partition) holding the key."),
        SettingField("key_label", "Key label", help="CKA_LABEL of the AES-256 secret key."),
        SettingField("pin", "User PIN", secret=True, help="The token's user (CKU_USER) PIN."),
    )

    retry_policy: RetryPolicy = DEFAULT_POLICY

    def __init__(self, settings: Mapping[str, Any], secrets: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(settings, secrets, **kwargs)
        self.module_path = str(self.settings.get("module_path", "")).strip()
        self.token_label = str(self.settings.get("token_label", "")).strip()
        self.key_label = str(self.settings.get("key_label", "")).strip()
        self._pin = str(self.secrets.get("pin", ""))
        self._pin_digest = hmac.digest(_PIN_DIGEST_KEY, self._pin.encode(), "sha256")
        #: why the token refused this instance's PIN; set once, then no more login attempts
        self._pin_rejected = ""

    # -- validation and help -----------------------------------------------------

    @classmethod
    def clean(cls, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        """Checks that the module exists (and is allowed) and the label lengths."""
        try:
            clean_settings, clean_secrets = super().clean(settings, secrets)
            problems: dict[str, list[str]] = {}
        except errors.InvalidInput as exc:
            problems = {name: list(messages) for name, messages in exc.field_errors.items()}
            clean_settings = {k: v.strip() if isinstance(v, str) else v for k, v in settings.items()}
            clean_secrets = {k: v for k, v in secrets.items() if isinstance(v, str)}

        def add(name: str, message: str) -> None:
            problems.setdefault(name, []).append(message)

        path = str(clean_settings.get("module_path") or "")
        if path and "module_path" not in problems:
            message = module_problem(path)
            if message:
                add("module_path", message)
        token_label = str(clean_settings.get("token_label") or "")
        if len(token_label.encode()) > MAX_TOKEN_LABEL_BYTES:
            add("token_label", f"A token label is at most {MAX_TOKEN_LABEL_BYTES} bytes.")
        if problems:
            raise errors.InvalidInput("The PKCS#11 configuration has errors.", field_errors=problems)
        return clean_settings, clean_secrets

    @classmethod
    def setup_help(cls, *, tenant_external_id: str = "", vendor_principal: str = "", tenant_uid: str = "") -> str:
        for_whom = f" for {tenant_external_id}" if tenant_external_id else ""
        return (
            f"PKCS#11 setup{for_whom}\n\n"
            "1. Install the HSM's PKCS#11 module on every KeyCore server (web and workers) at the same path, and "
            "make the token reachable from them (client configuration, network HSM registration).\n"
            "2. On the token, create a persistent AES-256 secret key (CKK_AES, CKA_VALUE_LEN 32) with CKA_ENCRYPT "
            "and CKA_DECRYPT true, CKA_SENSITIVE true, CKA_EXTRACTABLE false and a CKA_LABEL; the token must "
            "support CKM_AES_GCM. With OpenSC's pkcs11-tool:\n\n"
            "    pkcs11-tool --module <module path> --token-label <token> --login --pin <PIN> \\\n"
            "      --keygen --key-type AES:32 --label <key label> --sensitive --usage-decrypt\n\n"
            "   (pkcs11-tool sets CKA_ENCRYPT and CKA_DECRYPT for --usage-decrypt; SoftHSM2 for tests: "
            "softhsm2-util --init-token --free --label <token> --pin <PIN> --so-pin <SO PIN>, then the command "
            "above.)\n"
            "3. Enter the module path, the token label, the key label and the user PIN. A wrong PIN is tried once "
            "per saved configuration, so health checks cannot lock the token.\n\n"
            "To revoke KeyCore's access, destroy the key or change the PIN: KeyCore can no longer unwrap this "
            "tenant's keys once its in-memory copies expire."
        )

    @classmethod
    def check_tenant_settings(cls, settings: Mapping[str, Any]) -> None:
        """A tenant may name only a module the operator allows (the module's code runs in KeyCore)."""
        path = str(settings.get("module_path") or "").strip()
        problem = tenant_module_problem(path) if path else ""
        if problem:
            raise errors.InvalidInput(problem, field_errors={"module_path": [problem]})

    def describe(self) -> str:
        return f"token '{self.token_label}' key '{self.key_label}'"

    # -- key operations ----------------------------------------------------------

    def wrap(self, key: bytes, context: WrapContext) -> bytes:
        if not isinstance(key, bytes | bytearray) or not key:
            raise errors.InvalidInput("Only non-empty bytes can be wrapped.")
        iv = os.urandom(IV_BYTES)
        params = GCMParams(iv, HEADER + context.associated_data(), TAG_BYTES * 8)
        ciphertext = self._call(
            "encrypt",
            lambda kek: self._may(kek, "encrypt")(bytes(key), mechanism=Mechanism.AES_GCM, mechanism_param=params),
            context,
        )
        return HEADER + iv + ciphertext

    def unwrap(self, wrapped: bytes, context: WrapContext) -> bytes:
        if len(wrapped) < len(HEADER) or wrapped[:1] != HEADER[:1]:
            raise errors.MalformedData("This is not a tenant key wrapped by a PKCS#11 token.")
        if wrapped[1] != PKCS11_WRAP_V1:
            raise errors.MalformedData(f"Unknown PKCS#11-wrapped tenant key version {wrapped[1]}.")
        if len(wrapped) <= len(HEADER) + IV_BYTES + TAG_BYTES:
            raise errors.MalformedData("The PKCS#11-wrapped tenant key is truncated.")
        iv = bytes(wrapped[len(HEADER) : len(HEADER) + IV_BYTES])
        params = GCMParams(iv, HEADER + context.associated_data(), TAG_BYTES * 8)
        body = bytes(wrapped[len(HEADER) + IV_BYTES :])
        return self._call(
            "decrypt",
            lambda kek: self._may(kek, "decrypt")(body, mechanism=Mechanism.AES_GCM, mechanism_param=params),
            context,
        )

    def check(self, context: WrapContext) -> HealthResult:
        """Key attributes and mechanism support first, for a precise reason; then the probe."""
        started = time.perf_counter()
        try:
            warnings = self._call("inspect", self._inspect)
        except errors.KeyCoreError as exc:
            return HealthResult(False, exc.detail, (time.perf_counter() - started) * 1000, exc.code)
        result = super().check(context)
        extra = {**result.extra, "warnings": warnings} if warnings else result.extra
        return dataclasses.replace(result, latency_ms=(time.perf_counter() - started) * 1000, extra=extra)

    # -- internals ---------------------------------------------------------------

    def _inspect(self, kek: Any) -> list[str]:
        what = f"The key '{self.key_label}' on token '{self.token_label}'"
        length = kek[Attribute.VALUE_LEN]
        if length != KEK_BYTES:
            raise errors.KmsMisconfigured(f"{what} is AES-{length * 8}; KeyCore needs AES-256.")
        missing = [
            name
            for name, attribute in (("CKA_ENCRYPT", Attribute.ENCRYPT), ("CKA_DECRYPT", Attribute.DECRYPT))
            if not kek[attribute]
        ]
        if missing:
            raise errors.KmsMisconfigured(f"{what} does not allow {' and '.join(missing)}.")
        warnings = []
        try:
            if kek[Attribute.EXTRACTABLE]:
                warnings.append(f"{what} is extractable (CKA_EXTRACTABLE): it could be exported from the HSM.")
        except p11.AttributeTypeInvalid:
            pass
        return warnings

    def _may(self, kek: Any, operation: str) -> Callable[..., bytes]:
        """The key's ``encrypt``/``decrypt``; python-pkcs11 leaves it out when CKA_ENCRYPT/CKA_DECRYPT is false."""
        method = getattr(kek, operation, None)
        if method is None:
            raise errors.KmsMisconfigured(
                f"The key '{self.key_label}' on token '{self.token_label}' may not {operation} "
                f"(CKA_{operation.upper()} is false)."
            )
        return method

    def _call(self, operation: str, use: Callable[[Any], T], context: WrapContext | None = None) -> T:
        if self._pin_rejected:
            raise errors.KmsAccessDenied(self._pin_rejected)
        module = _module(self.module_path)

        def attempt() -> T:
            return module.run(
                lambda: self._attempt(module, operation, use, context),
                timeout=self.timeout,
                what=f"{operation} on {self.describe()}",
            )

        return call_with_retry(
            attempt, policy=self.retry_policy, description=f"PKCS#11 {operation} on {self.describe()}"
        )

    def _attempt(self, module: _Module, operation: str, use: Callable[[Any], T], context: WrapContext | None) -> T:
        for last_try in (False, True):
            state = self._session(module)
            try:
                kek = state.keys.get(self.key_label)
                if kek is None:
                    kek = state.keys[self.key_label] = self._find_key(state.session)
                return use(kek)
            except (p11.ObjectHandleInvalid, p11.KeyHandleInvalid):
                # the object was destroyed (or replaced) since we looked it up
                state.keys.pop(self.key_label, None)
                if last_try:
                    raise self._key_missing() from None
            except _SESSION_LOST as exc:
                module.drop(self.token_label)
                if last_try:
                    raise self._error(exc, operation, context) from None
            except p11.PKCS11Error as exc:
                raise self._error(exc, operation, context) from None
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _find_key(self, session: Any) -> Any:
        # Not Session.get_key: it leaves the search open when it finds two objects, and an open
        # C_FindObjects blocks every later operation on the shared session (CKR_OPERATION_ACTIVE).
        found = list(
            session.get_objects(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: KeyType.AES,
                    Attribute.LABEL: self.key_label,
                }
            )
        )
        if not found:
            raise self._key_missing()
        if len(found) > 1:
            raise errors.KmsMisconfigured(
                f"More than one AES key is labelled '{self.key_label}' on token '{self.token_label}'; "
                "labels must be unique."
            )
        return found[0]

    def _session(self, module: _Module) -> _TokenSession:
        state = module.sessions.get(self.token_label)
        if state is not None and hmac.compare_digest(state.pin_digest, self._pin_digest):
            return state
        module.drop(self.token_label)  # another PIN was logged in: log out, prove ours
        token = self._token(module)
        try:
            session = token.open(user_pin=self._pin)
        except p11.PinIncorrect:
            self._pin_rejected = (
                f"PIN incorrect for token '{self.token_label}'. It is not tried again until the configuration is "
                "saved again, so that health checks cannot lock the token."
            )
            raise errors.KmsAccessDenied(self._pin_rejected) from None
        except (p11.PinLocked, p11.PinExpired) as exc:
            state = "locked" if isinstance(exc, p11.PinLocked) else "expired"
            raise errors.KmsAccessDenied(
                f"The user PIN of token '{self.token_label}' is {state}; the token's security officer must reset it."
            ) from None
        except p11.UserPinNotInitialized:
            raise errors.KmsMisconfigured(f"Token '{self.token_label}' has no user PIN yet; initialise it.") from None
        except p11.UserAlreadyLoggedIn:
            raise errors.KmsMisconfigured(
                f"Token '{self.token_label}' is already logged in by other code in this process; KeyCore cannot "
                "verify this configuration's PIN."
            ) from None
        except p11.PKCS11Error as exc:
            raise self._error(exc, "login", None) from None
        state = module.sessions[self.token_label] = _TokenSession(session, self._pin_digest, token.slot)
        return state

    def _token(self, module: _Module) -> Any:
        for rescanned in (False, True):
            try:
                return module.lib.get_token(token_label=self.token_label)
            except p11.NoSuchToken:
                if rescanned or not module.rescan():
                    break
            except p11.MultipleTokensReturned:
                raise errors.KmsMisconfigured(
                    f"More than one token is labelled '{self.token_label}' in {self.module_path}."
                ) from None
            except p11.PKCS11Error as exc:
                raise self._error(exc, "token lookup", None) from None
        raise errors.KmsMisconfigured(
            f"Token '{self.token_label}' not found in the PKCS#11 module {self.module_path}: check the token label "
            "and that the token is connected."
        )

    def _key_missing(self) -> errors.KeyCoreError:
        return errors.KmsKeyNotFound(
            f"No key labelled '{self.key_label}' on token '{self.token_label}' (an AES secret key): it does not "
            "exist or was destroyed."
        )

    def _error(self, exc: p11.PKCS11Error, operation: str, context: WrapContext | None) -> errors.KeyCoreError:
        """One python-pkcs11 error → the typed KeyCore error that says what to fix."""
        token = f"token '{self.token_label}'"
        if isinstance(exc, p11.MechanismInvalid | p11.MechanismParamInvalid | p11.FunctionNotSupported):
            return errors.KmsMisconfigured(f"The {token} does not support CKM_AES_GCM, which KeyCore needs.")
        if isinstance(exc, p11.KeyTypeInconsistent | p11.KeySizeRange):
            return errors.KmsMisconfigured(f"The key '{self.key_label}' on {token} is not an AES-256 key.")
        if _KEY_FUNCTION_NOT_PERMITTED in str(exc):
            return errors.KmsMisconfigured(
                f"The key '{self.key_label}' on {token} may not {operation} (CKA_ENCRYPT / CKA_DECRYPT is false)."
            )
        if operation == "decrypt" and isinstance(exc, _NOT_AUTHENTIC):
            if context is None:
                return errors.AuthenticationFailed("The PKCS#11-wrapped tenant key does not authenticate.")
            return errors.AuthenticationFailed(
                f"The PKCS#11-wrapped tenant key does not authenticate for tenant {context.tenant_uid} version "
                f"{context.key_version}: it was altered, or belongs to another tenant, version or key."
            )
        if isinstance(exc, p11.UserNotLoggedIn):
            return errors.KmsAccessDenied(f"The {token} logged KeyCore out; check the PIN and the token's policy.")
        if isinstance(exc, _TRANSIENT + _SESSION_LOST):
            return errors.KmsUnreachable(f"The HSM failed during {operation} on {token} ({type(exc).__name__}).")
        return errors.ProviderError(f"The HSM refused {operation} on {token} ({type(exc).__name__}: {exc}).")
