"""A stand-in for a customer's AWS account, for stream tests and benchmarks.

A moto server of its own (the service's storage lives elsewhere), holding one bucket, and
IAM enforced once it is set up: requests must be signed by a known key and allowed by a
policy, and the delivery role trusts only the named principals presenting the external id.

- ``writer``: an IAM user allowed ``s3:PutObject`` into the bucket (a stream's key pair);
- ``service``: the identity logexport runs as, allowed only ``sts:AssumeRole``;
- ``role_arn``: a role allowed ``s3:PutObject`` into the bucket, which ``service`` and
  ``writer`` may assume with ``external_id``;
- ``auditor``: reads the bucket back, for assertions, and may change IAM (to take the
  writer's permission away for a while, as a customer might by mistake).
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.services import S3_REGION, S3Server

# moto accepts any key until IAM is enforced.
_SETUP_KEY = "setup"


@dataclass(frozen=True)
class KeyPair:
    access_key_id: str
    secret_access_key: str


@dataclass
class CustomerAccount:
    server: S3Server
    bucket: str
    writer: KeyPair
    service: KeyPair
    auditor: KeyPair
    role_arn: str
    external_id: str
    region: str = S3_REGION

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    def client(self, service: str = "s3", keys: KeyPair | None = None) -> Any:
        import boto3

        pair = keys or self.auditor
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=pair.access_key_id,
            aws_secret_access_key=pair.secret_access_key,
        )

    def keys(self, prefix: str = "") -> list[str]:
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def get(self, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def head(self, key: str) -> dict[str, Any]:
        head: dict[str, Any] = self.client().head_object(Bucket=self.bucket, Key=key)
        return head

    def allow_writer(self, allowed: bool) -> None:
        """Give the writer's ``s3:PutObject`` permission back, or take it away."""
        iam = self.client("iam")
        if allowed:
            iam.put_user_policy(
                UserName="stream-writer",
                PolicyName="stream-writer-policy",
                PolicyDocument=_policy(
                    {
                        "Effect": "Allow",
                        "Action": "s3:PutObject",
                        "Resource": f"arn:aws:s3:::{self.bucket}/*",
                    }
                ),
            )
        else:
            iam.delete_user_policy(UserName="stream-writer", PolicyName="stream-writer-policy")

    def stop(self) -> None:
        self.server.stop()


def _setup_client(server: S3Server, service: str) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=server.endpoint_url,
        region_name=S3_REGION,
        aws_access_key_id=_SETUP_KEY,
        aws_secret_access_key=_SETUP_KEY,
    )


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _user(iam: Any, name: str, *statements: dict[str, Any]) -> tuple[KeyPair, str]:
    arn: str = iam.create_user(UserName=name)["User"]["Arn"]
    iam.put_user_policy(
        UserName=name, PolicyName=f"{name}-policy", PolicyDocument=_policy(*statements)
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return KeyPair(key["AccessKeyId"], key["SecretAccessKey"]), arn


def start_customer_account(
    *, bucket: str | None = None, log_file: Path | None = None
) -> CustomerAccount:
    """A moto server on a free loopback port, set up as above, with IAM enforced."""
    server = S3Server(log_file=log_file)
    server.start()
    bucket = bucket or f"customer-{secrets.token_hex(6)}"
    external_id = f"ext-{secrets.token_hex(8)}"
    objects = f"arn:aws:s3:::{bucket}/*"
    _setup_client(server, "s3").create_bucket(Bucket=bucket)
    iam = _setup_client(server, "iam")
    writer, writer_arn = _user(
        iam, "stream-writer", {"Effect": "Allow", "Action": "s3:PutObject", "Resource": objects}
    )
    service, service_arn = _user(
        iam, "logexport-service", {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}
    )
    # The writer may also assume the role: a stream may hold a key pair and a role.
    iam.put_user_policy(
        UserName="stream-writer",
        PolicyName="assume",
        PolicyDocument=_policy({"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}),
    )
    auditor, _ = _user(
        iam,
        "auditor",
        {"Effect": "Allow", "Action": "s3:*", "Resource": [f"arn:aws:s3:::{bucket}", objects]},
        {"Effect": "Allow", "Action": "iam:*", "Resource": "*"},
    )
    trust = _policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": [service_arn, writer_arn]},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
        }
    )
    role_arn: str = iam.create_role(RoleName="logexport-delivery", AssumeRolePolicyDocument=trust)[
        "Role"
    ]["Arn"]
    iam.put_role_policy(
        RoleName="logexport-delivery",
        PolicyName="deliver",
        PolicyDocument=_policy({"Effect": "Allow", "Action": "s3:PutObject", "Resource": objects}),
    )
    enforce_iam(server)
    return CustomerAccount(
        server=server,
        bucket=bucket,
        writer=writer,
        service=service,
        auditor=auditor,
        role_arn=role_arn,
        external_id=external_id,
    )


@contextmanager
def customer_account(*, log_file: Path | None = None) -> Iterator[CustomerAccount]:
    """A customer account for the length of a ``with`` block; its server stopped and its log
    file removed on leaving."""
    account = start_customer_account(log_file=log_file)
    try:
        yield account
    finally:
        account.stop()
        if log_file is not None:
            log_file.unlink(missing_ok=True)


def enforce_iam(server: S3Server) -> None:
    """From now on every request to ``server`` is authenticated and authorized."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(  # noqa: S310 - the endpoint is http on loopback
        server.endpoint_url + "/moto-api/reset-auth",
        data=b"0",
        method="POST",
        # Not a form: the server reads the raw body as the count of requests left unchecked.
        headers={"Content-Type": "application/octet-stream"},
    )
    with opener.open(request, timeout=10) as response:
        response.read()
