#!/usr/bin/env python3
"""A foreign gRPC client (Python grpcio, no generated stubs) against a Strife gateway.

Run by the e2e test `compression::compression_and_metadata_from_a_python_grpcio_client`
with the venv `scripts/test` makes (`STRIFE_TEST_PYTHON`). Calls methods by path on raw
bytes (requests serialized by hand below), over mutual TLS with a user's certificate, and
prints one JSON line per case: {"case", "code", "details", "reason"}. The password comes
from STRIFE_PASSWORD, never the command line.

Cases: a gzip-compressed GetBalances; a gzip bomb (a Pay whose memo is 10 MiB of zeros,
compressed by grpcio); 1 MiB of password metadata; a plain call afterwards on the same
channel.

With --api-key (the e2e test `grpc_api_keys::a_python_grpcio_client_pays_with_an_api_key`):
no client certificate, the server checked against the CA, the key (STRIFE_API_KEY) as
`authorization: Bearer` metadata. Cases: GetBalances; a Pay with metadata entries (a
protobuf map) whose answer carries them back; no key; a Coordinator method.
"""

import argparse
import json
import os
import sys

import grpc


def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number, payload):
    """A length-delimited protobuf field (strings, bytes, messages)."""
    return varint((number << 3) | 2) + varint(len(payload)) + payload


def field_varint(number, value):
    return varint(number << 3) + varint(value)


def pay_request(key, to_username, amount_minor, currency, memo):
    """strife.v1.PayRequest: idempotency_key = 1, to_username = 2, amount = 3 (Money:
    amount_minor = 1, currency = 2), memo = 6."""
    money = field_varint(1, amount_minor) + field_bytes(2, currency.encode())
    return (
        field_bytes(1, key.encode())
        + field_bytes(2, to_username.encode())
        + field_bytes(3, money)
        + field_bytes(6, memo.encode())
    )


def metadata_entries(entries):
    """`map<string, string> metadata`: one length-delimited entry message per pair
    (key = 1, value = 2), as protobuf encodes a map."""
    return b"".join(
        field_bytes(7, field_bytes(1, key.encode()) + field_bytes(2, value.encode()))
        for key, value in entries.items()
    )


def read_varint(data, position):
    value, shift = 0, 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position


def fields(data):
    """(number, wire type, value) of each field of a protobuf message."""
    position = 0
    while position < len(data):
        key, position = read_varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = read_varint(data, position)
        elif wire == 2:
            length, position = read_varint(data, position)
            value = data[position : position + length]
            position += length
        else:
            raise ValueError(f"unexpected wire type {wire}")
        yield number, wire, value


def error_reason(error):
    """ErrorInfo.reason from grpc-status-details-bin (a google.rpc.Status), if any."""
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        for number, _, detail in fields(value):
            if number != 3:  # Status.details: repeated google.protobuf.Any
                continue
            any_fields = {n: v for n, _, v in fields(detail)}
            if any_fields.get(1, b"").endswith(b"google.rpc.ErrorInfo"):
                info = {n: v for n, _, v in fields(any_fields.get(2, b""))}
                return info.get(1, b"").decode()
    return None


def report(case, call):
    try:
        answer = call()
        result = {"case": case, "code": "OK", "bytes": len(answer)}
    except grpc.RpcError as error:
        result = {
            "case": case,
            "code": error.code().name,
            "details": error.details(),
            "reason": error_reason(error),
        }
    print(json.dumps(result), flush=True)


def read(path):
    with open(path, "rb") as file:
        return file.read()


def with_api_key(args):
    """The API-key cases: server-authenticated TLS only, the key as bearer metadata."""
    credentials = grpc.ssl_channel_credentials(root_certificates=read(args.ca))
    options = [("grpc.ssl_target_name_override", args.server_name)]
    bearer = [("authorization", "Bearer " + os.environ["STRIFE_API_KEY"])]
    with grpc.secure_channel(args.address, credentials, options=options) as channel:
        get_balances = channel.unary_unary("/strife.v1.Gateway/GetBalances")
        pay = channel.unary_unary("/strife.v1.Gateway/Pay")
        report("key_balances", lambda: get_balances(b"", metadata=bearer, timeout=10))
        tagged = pay_request("python-key-1", "bob", 3, "USD", "") + metadata_entries(
            {"order": "py-7", "via": "grpcio"}
        )
        answer = pay(tagged, metadata=bearer, timeout=20)
        echoed = {}
        for number, _, entry in fields(answer):
            if number == 19:  # Payment.metadata
                pair = {n: v.decode() for n, _, v in fields(entry)}
                echoed[pair.get(1, "")] = pair.get(2, "")
        print(json.dumps({"case": "key_pay", "code": "OK", "metadata": echoed}), flush=True)
        report("no_key", lambda: get_balances(b"", timeout=10))
        decision = channel.unary_unary("/strife.v1.Coordinator/GetDecision")
        report("coordinator", lambda: decision(b"", metadata=bearer, timeout=10))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-key", action="store_true")
    for flag in ["address", "ca", "server-name"]:
        parser.add_argument(f"--{flag}", required=True)
    for flag in ["cert", "key", "user"]:
        parser.add_argument(f"--{flag}")
    args = parser.parse_args()
    if args.api_key:
        return with_api_key(args)
    password = os.environ["STRIFE_PASSWORD"]

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca),
        private_key=read(args.key),
        certificate_chain=read(args.cert),
    )
    options = [("grpc.ssl_target_name_override", args.server_name)]
    metadata = [("x-strife-user", args.user), ("x-strife-password", password)]
    with grpc.secure_channel(args.address, credentials, options=options) as channel:
        # No serializers: requests and answers are bytes.
        get_balances = channel.unary_unary("/strife.v1.Gateway/GetBalances")
        pay = channel.unary_unary("/strife.v1.Gateway/Pay")
        report(
            "gzip",
            lambda: get_balances(
                b"", metadata=metadata, compression=grpc.Compression.Gzip, timeout=10
            ),
        )
        bomb = pay_request("python-bomb", "bob", 1, "USD", "\0" * (10 << 20))
        report(
            "gzip_bomb",
            lambda: pay(bomb, metadata=metadata, compression=grpc.Compression.Gzip, timeout=20),
        )
        huge = [("x-strife-user", args.user), ("x-strife-password", "p" * (1 << 20))]
        report("metadata_1mib", lambda: get_balances(b"", metadata=huge, timeout=10))
        report("after_metadata", lambda: get_balances(b"", metadata=metadata, timeout=10))
    return 0


if __name__ == "__main__":
    sys.exit(main())
