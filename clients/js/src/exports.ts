// exports.ts is what both entries (index.ts, node.ts) export besides createClient and createTransport.
export type { AgentIdentity, ClientOptions, GmsClient, TransportKind } from "./client.js";
export { clientOver } from "./client.js";
export { GmsError, LimitExceeded, NoMatch, PoolExhausted, RateLimited, isRetryable, toGmsError } from "./errors.js";
export { AgentChat, CustomerChat } from "./chat.js";
export type { AcceptOptions, Connection, QueueHandlers, ResumeAgentChat, ResumeChat, SendOptions, StartChatOptions, WatchOptions } from "./chat.js";
export type { ChatHandlers, SubscribeOptions, SubscriptionState } from "./subscription.js";
export { Code, ConnectError } from "@connectrpc/connect";
export type { Client, Interceptor, Transport } from "@connectrpc/connect";
// The contract: every service, message and enum of gms.v1 (the error details' messages under their
// schema names only: PoolExhausted and friends are the error classes here).
export * from "./gen/gms/v1/access_info_pb.js";
export * from "./gen/gms/v1/access_pb.js";
export * from "./gen/gms/v1/admin_pb.js";
export * from "./gen/gms/v1/agent_pb.js";
export * from "./gen/gms/v1/chat_event_pb.js";
export * from "./gen/gms/v1/chat_pb.js";
export * from "./gen/gms/v1/session_pb.js";
export * from "./gen/gms/v1/storage_pb.js";
export * from "./gen/gms/v1/value_pb.js";
export { LimitExceededSchema, NoMatchReason, NoMatchSchema, PoolExhaustedSchema, RateLimitedSchema, file_gms_v1_error_details } from "./gen/gms/v1/error_details_pb.js";
