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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ["address", "ca", "cert", "key", "server-name", "user"]:
        parser.add_argument(f"--{flag}", required=True)
    args = parser.parse_args()
    password = os.environ["STRIFE_PASSWORD"]

    def read(path):
        with open(path, "rb") as file:
            return file.read()

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
