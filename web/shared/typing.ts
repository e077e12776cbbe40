// typing.ts: the viewer's typing told to the other side, sparingly: "started" when typing begins
// (and again every few seconds while it goes on, as the server forgets it after
// chat.typing_timeout_seconds), "stopped" after a pause. The server coalesces and expires notices
// anyway; this keeps a page from sending one per keystroke.

/** TypingNotifier is told about keystrokes and sends. */
export interface TypingNotifier {
  /** input is called on every change of the message being written. */
  input(): void;
  /** sent is called when the message is sent (the server stops the notice itself). */
  sent(): void;
}

/** typingNotifier makes a notifier over `send` (its failures are ignored: typing is best effort). */
export function typingNotifier(send: (on: boolean) => Promise<void>, pauseMs = 4000, repeatMs = 5000): TypingNotifier {
  let on = false;
  let lastSent = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const set = (value: boolean) => {
    on = value;
    lastSent = Date.now();
    send(value).catch(() => undefined);
  };
  return {
    input() {
      if (!on || Date.now() - lastSent > repeatMs) set(true);
      clearTimeout(timer);
      timer = setTimeout(() => on && set(false), pauseMs);
    },
    sent() {
      clearTimeout(timer);
      on = false;
    },
  };
}
