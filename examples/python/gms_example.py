#!/usr/bin/env python3
"""opengms from Python over plain gRPC, with code generated from contract/ (generate.sh).

It does what a backend in another language does with opengms:
  - RequestInteraction: a session and an access number to call (the shipped iPhoneService);
  - MatchInteraction: the IVR's match of the call, then the same match again, refused NOT_FOUND with
    a gms.v1.NoMatch detail, decoded from the grpc-status-details-bin trailer (google.rpc.Status);
  - with --exhaust GROUP: reservations on a locking group until it is exhausted, RESOURCE_EXHAUSTED
    with a gms.v1.PoolExhausted detail (when the next number frees up), then the sessions cancelled;
  - a customer's chat: RequestChat, then Subscribe, printing every event an agent sends, replying
    to the agent's first message, until CHAT_ENDED. A stream that ends before CHAT_ENDED (the server's
    maximum stream age, a restart) is resumed from the last position + 1: nothing lost or doubled.
    Unless --no-agent, this script is also the agent (AcceptChat, a message, EndChat): run it
    against a development server whose queue has no other chat waiting.

Usage: python3 examples/python/gms_example.py [ADDRESS] [--key KEY] [--exhaust GROUP] [--no-agent]
ADDRESS is host:port or http://host:port (default localhost:8080); --key is sent as a Bearer API key.
"""
import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.environ.get("GMS_PYTHON_GEN") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402  (after the path to the generated code)
from google.rpc import status_pb2  # noqa: E402
from gms.v1 import access_pb2, access_pb2_grpc, agent_pb2, agent_pb2_grpc, chat_event_pb2, chat_pb2, chat_pb2_grpc, error_details_pb2, session_pb2, session_pb2_grpc  # noqa: E402

DETAILS = (error_details_pb2.NoMatch, error_details_pb2.PoolExhausted, error_details_pb2.RateLimited, error_details_pb2.LimitExceeded)
TIMEOUT = 10  # seconds, for every unary call


def details(err):
    """details decodes a failed call's error details: the google.rpc.Status of its
    grpc-status-details-bin trailer, its details unpacked into opengms's messages."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            found = []
            for any_detail in status_pb2.Status.FromString(value).details:
                for cls in DETAILS:
                    if any_detail.Is(cls.DESCRIPTOR):
                        message = cls()
                        any_detail.Unpack(message)
                        found.append(message)
            return found
    return []


def event_line(e):
    """event_line renders one chat event."""
    who = getattr(e, "from")  # `from` is a Python keyword
    line = f"event {e.position} {chat_event_pb2.ChatEventType.Name(e.type)} {who.nickname}"
    return f"{line}: {e.text}" if e.text else line


def access_and_match(channel, metadata):
    access = access_pb2_grpc.AccessServiceStub(channel)
    reply = access.RequestInteraction(access_pb2.RequestInteractionRequest(service="iPhoneService", phone_number="6504669999"), metadata=metadata, timeout=TIMEOUT)
    number = reply.access.access_number
    print(f"RequestInteraction: session {reply.session.id}, call {number} (group {reply.access.resource_group})", flush=True)
    match = access_pb2.MatchInteractionRequest(access_number=number, phone_number="6504669999", return_data=True)
    matched = access.MatchInteraction(match, metadata=metadata, timeout=TIMEOUT)
    print(f"MatchInteraction: matched session {matched.matches[0].session_id}", flush=True)
    try:
        access.MatchInteraction(match, metadata=metadata, timeout=TIMEOUT)
        raise SystemExit("MatchInteraction again should have found nothing")
    except grpc.RpcError as e:
        reasons = [error_details_pb2.NoMatchReason.Name(d.reason) for d in details(e) if isinstance(d, error_details_pb2.NoMatch)]
        print(f"MatchInteraction again: {e.code().name}, NoMatch {', '.join(reasons)}", flush=True)


def exhaust(channel, metadata, group):
    """exhaust reserves the numbers of a locking group until it is refused, then cancels the sessions."""
    access = access_pb2_grpc.AccessServiceStub(channel)
    sessions = session_pb2_grpc.SessionServiceStub(channel)
    made = []
    try:
        while len(made) < 10_000:
            caller = f"+1650555{len(made):04d}"
            reply = access.RequestInteraction(access_pb2.RequestInteractionRequest(resource_group=group, phone_number=caller), metadata=metadata, timeout=TIMEOUT)
            made.append(reply.session.id)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        for d in details(e):
            if isinstance(d, error_details_pb2.PoolExhausted):
                print(f"RequestInteraction on {group}: {len(made)} reserved, then {e.code().name}, PoolExhausted group {d.resource_group}, "
                      f"next number free at {d.next_free_at.ToJsonString()} (retry after {d.retry_after_seconds} s)", flush=True)
    finally:
        for session_id in made:
            sessions.CancelSession(session_pb2.CancelSessionRequest(session_id=session_id), metadata=metadata, timeout=TIMEOUT)
        print(f"cancelled {len(made)} sessions", flush=True)


def follow(chat, chat_id, secure_key, metadata, greeted):
    """follow prints the customer's chat from its first event until CHAT_ENDED, resuming a stream
    that ends before it from the last position + 1, and thanks the agent for its first message."""
    last = 0
    while True:
        try:
            for e in chat.Subscribe(chat_pb2.SubscribeRequest(chat_id=chat_id, secure_key=secure_key, from_position=last + 1), metadata=metadata):
                if e.type == chat_event_pb2.CHAT_EVENT_TYPE_HEARTBEAT:
                    continue  # the server's sign of life on a quiet stream
                print(event_line(e), flush=True)
                if e.position > 0:
                    last = e.position
                if e.type == chat_event_pb2.CHAT_EVENT_TYPE_MESSAGE and getattr(e, "from").type == chat_event_pb2.PARTICIPANT_TYPE_AGENT and not greeted.is_set():
                    chat.SendMessage(chat_pb2.SendMessageRequest(chat_id=chat_id, secure_key=secure_key, text="Thank you!", client_message_id="thanks-1"), metadata=metadata, timeout=TIMEOUT)
                    greeted.set()
                if e.type == chat_event_pb2.CHAT_EVENT_TYPE_CHAT_ENDED:
                    return
            print(f"the stream ended at position {last}: resuming", flush=True)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            print(f"the stream broke ({e.code().name}) at position {last}: resuming", flush=True)
            time.sleep(1)


def chat_with_agent(channel, metadata, play_agent, endpoint):
    chat = chat_pb2_grpc.ChatServiceStub(channel)
    started = chat.RequestChat(chat_pb2.RequestChatRequest(nickname="Ann", subject="Order 42"), metadata=metadata, timeout=TIMEOUT)
    print(f"RequestChat: chat {started.chat_id}", flush=True)
    greeted = threading.Event()
    failure = []

    def run():
        try:
            follow(chat, started.chat_id, started.secure_key, metadata, greeted)
        except Exception as e:  # reported by the main thread
            failure.append(e)

    reader = threading.Thread(target=run, daemon=True)
    reader.start()
    if play_agent:
        agent = agent_pb2_grpc.AgentServiceStub(channel)
        accepted = agent.AcceptChat(agent_pb2.AcceptChatRequest(endpoint=endpoint, nickname="Bob", wait_seconds=10), metadata=metadata, timeout=TIMEOUT + 10)
        if accepted.chat_id != started.chat_id:
            raise SystemExit(f"another chat ({accepted.chat_id}) was waiting on endpoint {endpoint}: run this against a quiet development server, or with --no-agent")
        agent.SendMessage(agent_pb2.AgentServiceSendMessageRequest(chat_id=started.chat_id, text="Hello from the agent"), metadata=metadata, timeout=TIMEOUT)
        if not greeted.wait(60):
            raise SystemExit("the customer did not see the agent's message")
        agent.EndChat(agent_pb2.EndChatRequest(chat_id=started.chat_id), metadata=metadata, timeout=TIMEOUT)
    else:
        print(f"waiting for an agent to accept the chat on endpoint {endpoint}", flush=True)
    reader.join(300)
    if failure:
        raise failure[0]
    if reader.is_alive():
        raise SystemExit("the chat did not end")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("address", nargs="?", default="localhost:8080")
    parser.add_argument("--key", help="an API key, sent as Authorization: Bearer")
    parser.add_argument("--exhaust", metavar="GROUP", help="exhaust this locking resource group to show PoolExhausted")
    parser.add_argument("--no-agent", action="store_true", help="leave the chat to another agent")
    parser.add_argument("--endpoint", default="default", help="the chat queue the agent takes from")
    args = parser.parse_args()
    target = args.address.split("://", 1)[-1].rstrip("/")
    metadata = [("authorization", f"Bearer {args.key}")] if args.key else []
    with grpc.insecure_channel(target) as channel:
        access_and_match(channel, metadata)
        if args.exhaust:
            exhaust(channel, metadata, args.exhaust)
        chat_with_agent(channel, metadata, not args.no_agent, args.endpoint)
    print("done", flush=True)


if __name__ == "__main__":
    main()
