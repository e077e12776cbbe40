/**
 * The chat vocabulary: what a chat, its participants and its transcript events are. The domain owns
 * it; the store keeps it and the RPC layer maps it onto the contract.
 */

/** ChatState is where a chat is: waiting in its queue, with an agent, or over. */
export type ChatState = "waiting" | "active" | "ended";

/** ParticipantKind is who a participant is. */
export type ParticipantKind = "client" | "agent" | "supervisor" | "system";

/** EventKind is a transcript event's type (GMS chat v2 names, snake_case). */
export type EventKind =
  | "participant_joined"
  | "participant_left"
  | "message"
  | "typing_started"
  | "typing_stopped"
  | "nickname_updated"
  | "custom_notice"
  | "push_url"
  | "file_uploaded"
  | "file_deleted"
  | "user_data_updated"
  | "chat_ended";

/** ParticipantRef is a participant as events show it. */
export interface ParticipantRef {
  participantId: string;
  nickname: string;
  kind: ParticipantKind;
}

/** ChatEventRecord is one stored transcript event (or, with position 0, a live typing notice). */
export interface ChatEventRecord {
  chatId: string;
  position: number;
  kind: EventKind;
  from: ParticipantRef;
  text: string;
  messageType: string;
  time: number;
  userData: Record<string, string>;
  clientMessageId: string;
  fileId: string;
  fileName: string;
  fileSize: number;
  fileContentType: string;
}
