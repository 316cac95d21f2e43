"""Programs that the keystore tests run in a child process.

A segfault in SoftHSM2 kills the whole process, so the tests that might
crash it run here and check the exit status:
- ``hammer``: two keystores on one token (inline crypto on and off) under
  many trio tasks and both worker pools; every result is checked.
- ``seal-samples`` and ``open-samples``: seal samples in agents that
  start together on a new token, then open them all in a later one.
- ``unlocked-threads``: load SoftHSM2 the way python-pkcs11 does on its
  own (``C_Initialize(NULL)``) and run four threads on it.
Usage: ``python hsm_child.py COMMAND MODULE CONF LABEL PIN_FILE [SECONDS]``.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from pathlib import Path

import trio

from agent.keystore import HSM, SOFTWARE, KeystoreSettings, open_keystore

_SPECS = [
    ("Aliyun_AES_256", HSM),
    ("Aliyun_AES_128", HSM),
    ("Aliyun_AES_256", SOFTWARE),
    ("Aliyun_SM4", SOFTWARE),
]


def _settings(module, conf, label, pin_file, **overrides) -> KeystoreSettings:
    fields = dict(name="child", type="pkcs11", module=module, token_label=label,
                  pin_file=Path(pin_file), softhsm2_conf=Path(conf))
    fields.update(overrides)
    return KeystoreSettings(**fields)


async def _round_trips(keystore, materials, deadline, counts, kind, size_choices):
    while time.monotonic() < deadline:
        material = random.choice(materials)
        plaintext = os.urandom(random.choice(size_choices))
        aad = os.urandom(random.randrange(0, 32))
        iv, ciphertext = await keystore.encrypt(material, plaintext, aad)
        decrypted = await keystore.decrypt(material, iv, ciphertext, aad)
        if decrypted != plaintext:
            raise AssertionError(f"{kind}: round trip returned other bytes")
        counts[kind] += 1


async def _generate_and_use(keystore, deadline, counts, prefix):
    number = 0
    while time.monotonic() < deadline:
        number += 1
        spec, level = random.choice(_SPECS)
        material = await keystore.generate(f"{prefix}-{number}", spec, level)
        iv, ciphertext = await keystore.encrypt(material, b"fresh", b"")
        if await keystore.decrypt(material, iv, ciphertext, b"") != b"fresh":
            raise AssertionError("generate: new key failed its round trip")
        counts["generate"] += 1


async def _random(keystore, deadline, counts):
    while time.monotonic() < deadline:
        length = random.choice([1, 32, 1024, 70_000])
        if len(await keystore.random_bytes(length)) != length:
            raise AssertionError("random_bytes returned the wrong length")
        counts["random"] += 1


async def hammer(module, conf, label, pin_file, seconds) -> dict:
    """Drive two keystores on one token from many tasks; return op counts."""
    inline = await open_keystore(_settings(module, conf, label, pin_file,
                                           inline_crypto=True, cache_size=4))
    threaded = await open_keystore(_settings(module, conf, label, pin_file,
                                             inline_crypto=False, cache_size=4))
    materials = []
    for number in range(12):
        spec, level = _SPECS[number % len(_SPECS)]
        materials.append(await inline.generate(f"hammer-{number}", spec, level))
    counts = dict.fromkeys(["inline", "large", "threaded", "generate", "random"], 0)
    deadline = time.monotonic() + seconds
    async with trio.open_nursery() as nursery:
        for _ in range(12):
            nursery.start_soon(_round_trips, inline, materials, deadline, counts,
                               "inline", [0, 1, 32, 4096])
        for _ in range(3):
            nursery.start_soon(_round_trips, inline, materials, deadline, counts,
                               "large", [70_000, 200_000])
        for _ in range(6):
            nursery.start_soon(_round_trips, threaded, materials, deadline, counts,
                               "threaded", [32, 4096, 70_000])
        nursery.start_soon(_generate_and_use, inline, deadline, counts, "gi")
        nursery.start_soon(_generate_and_use, threaded, deadline, counts, "gt")
        nursery.start_soon(_random, inline, deadline, counts)
        nursery.start_soon(_random, threaded, deadline, counts)
    await inline.aclose()
    await threaded.aclose()
    return counts


async def seal_samples(module, conf, label, pin_file) -> list[dict]:
    """Open a keystore, seal one HSM and one SOFTWARE sample; return them."""
    keystore = await open_keystore(_settings(module, conf, label, pin_file))
    samples = []
    for level in (HSM, SOFTWARE):
        version_id = f"sample-{os.getpid()}-{level}"
        material = await keystore.generate(version_id, "Aliyun_AES_256", level)
        iv, ciphertext = await keystore.encrypt(material, b"sample", b"")
        samples.append({
            "version_id": version_id, "level": level,
            "wrap_format": material.wrap_format, "wrapped": material.wrapped.hex(),
            "iv": iv.hex(), "ciphertext": ciphertext.hex(),
            "domain_key_id": keystore._slots[0].domain_key_id.hex(),
        })
    await keystore.aclose()
    return samples


async def open_samples(module, conf, label, pin_file) -> dict:
    """Decrypt the samples given as JSON on stdin; return the count and key."""
    from agent.keystore import KeyMaterial

    keystore = await open_keystore(_settings(module, conf, label, pin_file))
    opened = 0
    for sample in json.loads(sys.stdin.read()):
        material = KeyMaterial(sample["version_id"], "Aliyun_AES_256", sample["level"],
                               sample["wrap_format"], bytes.fromhex(sample["wrapped"]))
        plaintext = await keystore.decrypt(material, bytes.fromhex(sample["iv"]),
                                           bytes.fromhex(sample["ciphertext"]), b"")
        if plaintext != b"sample":
            raise AssertionError("a sample decrypted to other bytes")
        opened += 1
    key_id = keystore._slots[0].domain_key_id.hex()
    await keystore.aclose()
    return {"opened": opened, "domain_key_id": key_id}


def unlocked_threads(module, conf, label, pin_file, seconds) -> str:
    """Run GCM, key churn and session churn in four threads, without locking."""
    import pkcs11
    from pkcs11 import GCMParams, KeyType, Mechanism
    from pkcs11.constants import MechanismFlag

    os.environ["SOFTHSM2_CONF"] = conf
    token = pkcs11.lib(module).get_token(token_label=label)
    login = token.open(rw=True, user_pin=Path(pin_file).read_text().strip())
    deadline = time.monotonic() + seconds
    flags = MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT

    def churn(kind: int) -> None:
        session = token.open(rw=True)
        key = session.generate_key(KeyType.AES, 256, capabilities=flags)
        while time.monotonic() < deadline:
            if kind == 0:
                token.open(rw=True).close()
            elif kind == 1:
                iv = os.urandom(12)
                key.encrypt(b"x" * 32, mechanism=Mechanism.AES_GCM,
                            mechanism_param=GCMParams(iv, b"", 128))
            else:
                session.generate_key(KeyType.AES, 256, capabilities=flags).destroy()

    threads = [threading.Thread(target=churn, args=(kind % 3,)) for kind in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    login.close()
    return "survived"


def main() -> None:
    command, module, conf, label, pin_file, *rest = sys.argv[1:]
    seconds = float(rest[0]) if rest else 2.0
    if command == "hammer":
        result = trio.run(hammer, module, conf, label, pin_file, seconds)
    elif command == "seal-samples":
        result = trio.run(seal_samples, module, conf, label, pin_file)
    elif command == "open-samples":
        result = trio.run(open_samples, module, conf, label, pin_file)
    elif command == "unlocked-threads":
        result = unlocked_threads(module, conf, label, pin_file, seconds)
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
