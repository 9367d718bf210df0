"""A destination's name and messaging system, whatever form a span gives them (model/destinations.py), and
the ClickHouse graph's SQL twin of the same rules, evaluated by chdb.

The forms are the ones real instrumentation writes: opentelemetry-instrumentation-botocore 0.66b1
(``messaging.system=aws.sqs``, ``messaging.destination``, ``messaging.url``, ``aws.queue_url``; SNS
``messaging.destination.name=<topic ARN>``, ``aws.sns.topic.arn``), its Lambda instrumentation (``aws_sqs``),
hopscope's publishers (``aws.sqs.queue.url``), and the older registered values (``aws_sns``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hopscope.collector.model.destinations import (
    DESTINATION_KEYS,
    DESTINATION_KEYS_IN_ORDER,
    SYSTEM_ALIASES,
    destination_name,
    destination_node,
    messaging_system,
    name_of,
)
from hopscope.collector.stitch.graph_rules import DEFAULT_MESSAGING_SYSTEM, client_edge
from hopscope.collector.store.clickhouse import graph as clickhouse_graph
from hopscope.collector.store.clickhouse.client import ClickHouseClient
from hopscope.collector.store.url import open_clickhouse_client, parse_store_url

ACCOUNT = "123456789012"
TOPIC_ARN = f"arn:aws:sns:us-east-1:{ACCOUNT}:order-events"


@pytest.mark.parametrize(
    ("attributes", "name"),
    [
        ({"messaging.destination.name": "billing"}, "billing"),
        ({"messaging.destination.name": TOPIC_ARN}, "order-events"),  # vanilla botocore's SNS Publish
        ({"messaging.destination": "orders"}, "orders"),  # vanilla botocore's SQS calls, older name
        ({"messaging.url": f"http://localhost:5000/{ACCOUNT}/orders"}, "orders"),  # moto's queue URL
        ({"aws.queue_url": f"https://sqs.eu-west-1.amazonaws.com/{ACCOUNT}/jobs.fifo"}, "jobs.fifo"),
        ({"aws.sqs.queue.url": f"https://sqs.eu-west-1.amazonaws.com/{ACCOUNT}/jobs/"}, "jobs"),
        ({"aws.sqs.queue_url": f"https://eu-west-1.queue.amazonaws.com/{ACCOUNT}/legacy"}, "legacy"),
        ({"aws.sqs.queue.url": f"http://localhost:4566/queue/us-east-1/{ACCOUNT}/local"}, "local"),
        ({"aws.sns.topic.arn": TOPIC_ARN}, "order-events"),
        ({"aws.sns.topic_arn": f"{TOPIC_ARN}:0b5c8a6e-1d2f-4c3b-9a8e-7f6d5c4b3a21"}, "order-events"),
        ({"messaging.destination.name": f"arn:aws:sqs:us-east-1:{ACCOUNT}:dlq.fifo"}, "dlq.fifo"),
        ({"messaging.destination.name": f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/shop"}, "shop"),
        ({"messaging.destination.name": f"arn:aws-cn:kinesis:cn-north-1:{ACCOUNT}:stream/clicks"}, "clicks"),
        ({"messaging.destination.template": "orders-{tenant}"}, "orders-{tenant}"),
        # the current name wins over the older ones and the URLs
        ({"messaging.destination.name": "a", "messaging.destination": "b", "messaging.url": "c"}, "a"),
        ({"messaging.destination.name": "", "messaging.destination": "b"}, "b"),  # an empty one names none
        ({"messaging.destination.name": "orders:eu"}, "orders:eu"),  # not an ARN: unchanged
        ({"messaging.destination.name": "http://example.com/"}, "http://example.com/"),  # no queue path
        ({"messaging.destination.name": 42}, "42"),
        ({"rpc.service": "SQS"}, None),  # ListQueues: no destination
        ({}, None),
    ],
)
def test_the_destination_name_of_each_form(attributes: Mapping[str, object], name: str | None) -> None:
    assert destination_name(attributes) == name


@pytest.mark.parametrize(
    ("attributes", "system"),
    [
        ({"messaging.system": "aws_sqs"}, "aws_sqs"),  # registered value, Lambda instrumentation's
        ({"messaging.system": "aws.sqs"}, "aws_sqs"),  # botocore 0.66b1's SQS extension
        ({"messaging.system": "AmazonSQS"}, "aws_sqs"),
        ({"messaging.system": "aws.sns"}, "aws.sns"),  # registered value, botocore's and hopscope's
        ({"messaging.system": "aws_sns"}, "aws.sns"),  # the older spelling
        ({"messaging.system": "AWS_SNS"}, "aws.sns"),
        ({"messaging.system": "aws_eventbridge"}, "aws.eventbridge"),
        ({"messaging.system": "kafka"}, "kafka"),  # unknown to hopscope: unchanged
        ({"messaging.system": "Kafka"}, "Kafka"),
        ({"aws.sns.topic.arn": TOPIC_ARN}, "aws.sns"),  # no messaging.system: the ARN says
        (
            {"messaging.destination.name": f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/x"},
            "aws.eventbridge",
        ),
        ({"aws.sqs.queue.url": f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/q"}, "aws_sqs"),
        ({"messaging.url": f"http://localhost:5000/{ACCOUNT}/q"}, None),  # moto's URL names no system
        ({"messaging.destination.name": "orders"}, None),
        ({"messaging.system": "", "messaging.destination.name": "orders"}, None),
    ],
)
def test_the_messaging_system_in_hopscopes_spelling(
    attributes: Mapping[str, object], system: str | None
) -> None:
    assert messaging_system(attributes) == system


def test_vanilla_and_hopscope_spans_of_one_destination_name_one_node() -> None:
    """Each pair: what vanilla botocore 0.66b1 writes, what hopscope's instrumentation writes."""
    queue_url = f"http://127.0.0.1:5000/{ACCOUNT}/orders"
    vanilla_sqs = {"rpc.system": "aws-api", "rpc.service": "SQS", "aws.queue_url": queue_url,
                   "messaging.system": "aws.sqs", "messaging.url": queue_url,
                   "messaging.destination": "orders"}  # fmt: skip
    hopscope_sqs = {"messaging.system": "aws_sqs", "messaging.destination.name": "orders"}
    vanilla_sns = {"rpc.system": "aws-api", "messaging.system": "aws.sns", "aws.sns.topic.arn": TOPIC_ARN,
                   "messaging.destination": TOPIC_ARN, "messaging.destination.name": TOPIC_ARN}  # fmt: skip
    hopscope_sns = {"messaging.system": "aws.sns", "messaging.destination.name": "order-events"}
    older_sns = {"messaging.system": "aws_sns", "messaging.destination.name": "order-events"}
    node = destination_node
    assert node(vanilla_sqs, "messaging") == node(hopscope_sqs, "messaging") == "aws_sqs:orders"
    assert node(vanilla_sns, "x") == node(hopscope_sns, "x") == node(older_sns, "x") == "aws.sns:order-events"
    # an AWS SDK call naming a bus but no messaging.system: botocore's rpc.service names the system
    bus = {"rpc.system": "aws-api", "rpc.service": "EventBridge", "messaging.destination.name": "shop"}
    assert node(bus, "messaging") == "aws.eventbridge:shop"
    assert node({"messaging.destination.name": "shop"}, "messaging") == "messaging:shop"
    assert node({"rpc.service": "SQS"}, "messaging") is None


@pytest.mark.parametrize(
    ("attributes", "edge"),
    [
        # vanilla botocore's SQS SendMessage: a CLIENT span that names its queue -> a publish edge
        ({"rpc.system": "aws-api", "rpc.service": "SQS", "rpc.method": "SendMessage",
          "messaging.system": "aws.sqs", "messaging.destination": "orders"}, ("aws_sqs:orders", "publish")),
        ({"rpc.system": "aws-api", "rpc.service": "SQS", "rpc.method": "SendMessageBatch",
          "aws.queue_url": f"http://localhost:1/{ACCOUNT}/q.fifo"}, ("aws_sqs:q.fifo", "publish")),
        ({"rpc.system": "aws-api", "rpc.service": "EventBridge", "rpc.method": "PutEvents",
          "messaging.destination.name": f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/shop"},
         ("aws.eventbridge:shop", "publish")),
        # another call that names the queue: on the queue's node, not a publish
        ({"rpc.system": "aws-api", "rpc.service": "SQS", "rpc.method": "ReceiveMessage",
          "messaging.system": "aws.sqs", "messaging.destination": "orders"}, ("aws_sqs:orders", "external")),
        # naming no destination: external as before
        ({"rpc.system": "aws-api", "rpc.service": "SQS", "rpc.method": "ListQueues"},
         ("external:SQS", "external")),
        ({"rpc.system": "aws-api", "rpc.service": "EventBridge", "rpc.method": "PutEvents"},
         ("external:EventBridge", "external")),
        ({"db.system": "postgresql", "server.address": "db"}, ("external:postgresql", "external")),
        # no dependency: no edge here (an HTTP call waits for its server span instead)
        ({"server.address": "api.example.com", "messaging.destination.name": "x"}, None),
    ],
)  # fmt: skip
def test_a_dependency_call_naming_a_destination_counts_on_its_node(
    attributes: Mapping[str, object], edge: tuple[str, str] | None
) -> None:
    assert client_edge(attributes) == edge


# -- properties ---------------------------------------------------------------------------------------------

names = st.text(st.characters(exclude_categories=["Cs"], exclude_characters=":/?#\n"), min_size=1)
regions = st.sampled_from(["us-east-1", "eu-west-1", "cn-north-1", ""])
accounts = st.from_regex(r"\d{12}", fullmatch=True)


@given(st.text(min_size=1))
def test_a_plain_name_passes_through(name: str) -> None:
    """Anything that is neither an ARN nor a URL with a path is a name as it is."""
    if not name.startswith("arn:") and "://" not in name:
        assert destination_name({"messaging.destination.name": name}) == name
        assert name_of(name) == name


@given(
    name=names, region=regions, account=accounts, partition=st.sampled_from(["aws", "aws-cn", "aws-us-gov"])
)
def test_an_arn_gives_its_resource_name(name: str, region: str, account: str, partition: str) -> None:
    assert name_of(f"arn:{partition}:sqs:{region}:{account}:{name}") == name
    assert name_of(f"arn:{partition}:sns:{region}:{account}:{name}") == name
    assert name_of(f"arn:{partition}:sns:{region}:{account}:{name}:{account}-subscription") == name
    assert name_of(f"arn:{partition}:events:{region}:{account}:event-bus/{name}") == name


@given(
    name=names,
    account=accounts,
    base=st.sampled_from(
        [
            "https://sqs.us-east-1.amazonaws.com",
            "http://localhost:4566",
            "http://127.0.0.1:5000",
            "https://vpce-1a2b.sqs.eu-west-1.vpce.amazonaws.com",
            "http://localhost:4566/queue/us-east-1",
        ]
    ),
    fifo=st.booleans(),
    slash=st.booleans(),
)
def test_a_queue_url_gives_its_queue_name(
    name: str, account: str, base: str, fifo: bool, slash: bool
) -> None:
    queue = f"{name}.fifo" if fifo else name
    for key in ("aws.sqs.queue.url", "aws.queue_url", "messaging.url"):
        url = f"{base}/{account}/{queue}" + ("/" if slash else "")
        assert destination_name({key: url}) == queue


@given(st.sampled_from(sorted(SYSTEM_ALIASES)), st.sampled_from([str.lower, str.upper, str.title]))
def test_every_spelling_of_a_system_is_one_system(spelling: str, case: Callable[[str], str]) -> None:
    system = messaging_system({"messaging.system": case(spelling)})
    assert system == SYSTEM_ALIASES[spelling]
    assert messaging_system({"messaging.system": system}) == system  # canonical is a fixed point


def test_destination_keys_are_every_key_destination_name_reads() -> None:
    """The hot-path check: a span with none of these keys names no destination."""
    assert frozenset(DESTINATION_KEYS_IN_ORDER) == DESTINATION_KEYS
    for key in DESTINATION_KEYS:
        assert destination_name({key: "q"}) == "q"
    assert destination_name({"messaging.destination.kind": "topic", "messaging.operation": "publish"}) is None


# -- the SQL twin --------------------------------------------------------------------------------------------

# Values as spans give them: names, ARNs, URLs, their near misses, and any text.
_PIECES = ["arn:", "aws", ":", "sns", "sqs", "events", "kinesis", "/", "event-bus", "http://", "https://",
           "sqs.", ".queue.amazonaws.com/", ACCOUNT, "?", "#", "\n", ".fifo", "é", "", "q"]  # fmt: skip
values = st.one_of(
    st.lists(st.sampled_from(_PIECES), max_size=9).map("".join),
    st.text(max_size=12),
    st.builds(lambda r, a, n: f"arn:aws:sns:{r}:{a}:{n}", regions, accounts, names),
    st.builds(lambda a, n: f"http://localhost:4566/{a}/{n}", accounts, names),
)
systems = st.one_of(
    st.sampled_from(sorted(SYSTEM_ALIASES)).map(str.upper),
    st.sampled_from(["", "kafka", "Aws.Sqs"]),
    st.text(max_size=6),
)
_KEYS = [*DESTINATION_KEYS_IN_ORDER, "messaging.system", "rpc.service"]
attribute_maps = st.dictionaries(
    st.sampled_from(_KEYS),
    st.one_of(values, systems, st.sampled_from(["SQS", "EventBridge", "sns"])),
    max_size=5,
)


@pytest.fixture(scope="module")
def chdb_client(chdb_path: Path) -> Iterator[ClickHouseClient]:
    """On the session's chdb data path: chdb opens one per process."""
    client = open_clickhouse_client(parse_store_url(f"chdb://{chdb_path}?database=destinations_twin"))
    client.command("CREATE DATABASE IF NOT EXISTS destinations_twin")
    yield client
    client.close()


def _in_sql(client: ClickHouseClient, span: Mapping[str, str], link: Mapping[str, str]) -> list[list[str]]:
    """(name, system, node) of the span alone and of its link's hop (link attributes first)."""
    columns = ", ".join(
        f"{clickhouse_graph._destination_name(on_link)}, {clickhouse_graph._messaging_system(on_link)}, "
        f"{clickhouse_graph._destination(on_link)}"
        for on_link in (False, True)
    )
    rows = client.query(
        f"SELECT {columns} FROM (SELECT "
        "mapFromArrays({k:Array(String)}, {v:Array(String)}) AS SpanAttributes, "
        "[mapFromArrays({lk:Array(String)}, {lv:Array(String)})] AS `Links.Attributes`, 1 AS hop)",
        {"k": list(span), "v": list(span.values()), "lk": list(link), "lv": list(link.values())},
    )
    return [list(rows[0][:3]), list(rows[0][3:])]


def _in_python(attributes: Mapping[str, str]) -> list[str]:
    node = destination_node(attributes, DEFAULT_MESSAGING_SYSTEM)
    return [destination_name(attributes) or "", messaging_system(attributes) or "", node or ""]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(span=attribute_maps, link=attribute_maps)
@example(span={"messaging.destination.name": TOPIC_ARN, "messaging.system": "aws_sns"}, link={})
@example(
    span={"messaging.destination": "orders", "messaging.system": "aws.sqs"}, link={"messaging.system": ""}
)
@example(span={"aws.queue_url": f"http://localhost:1/{ACCOUNT}/q\n"}, link={"rpc.service": "sqs"})
@example(span={"messaging.destination.name": "arn:aws:sns:r:1:\n"}, link={})
@example(span={"messaging.system": "aws.\u212ainesis", "messaging.destination": "s"}, link={})  # Kelvin sign
def test_clickhouse_names_destinations_as_python_does(
    chdb_client: ClickHouseClient, span: dict[str, str], link: dict[str, str]
) -> None:
    """The ClickHouse graph's SQL gives the name, system and node Python gives, for a span and for a batch
    link's hop (the link's attributes over the span's, as SQLite merges them)."""
    assert _in_sql(chdb_client, span, link) == [_in_python(span), _in_python({**span, **link})]
