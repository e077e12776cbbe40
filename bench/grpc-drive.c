// bench/grpc-drive.c drives unary gRPC calls over cleartext HTTP/2 (h2c) with a body of their own
// each, on libnghttp2 (Debian's libnghttp2-dev): what h2load does for one body sent over and over,
// for calls that must differ (MatchInteraction on a number of its own per call). About 22 µs of
// CPU per call with its start and its log, as h2load's here, where the Node generator (bench/grpc-load.ts) spends 150-200 µs on the two cores the
// server and the database share. bench/grpc-drive.ts compiles and runs it.
//
//   grpc-drive HOST PORT PATH CONNECTIONS STREAMS DURATION_MS BODIES LOG [HEADER: VALUE]...
//   grpc-drive --version
//
// BODIES is a file of gRPC messages, each already framed (flag byte, 4-byte big-endian length,
// bytes); the calls take them in order, one each, and no call starts once they are used up or the
// duration has passed (a DURATION_MS of 0: until they are used up). CONNECTIONS × STREAMS calls are in flight at once. LOG gets a line per
// finished call: its start (µs since the epoch), its grpc-status (-1 when the stream ended without
// one, or was reset), its latency (µs). The exit status is 0 when every call finished
// and the bodies lasted the duration (when one is given).
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEADERS 16

typedef struct {
  const uint8_t *data;
  size_t len;
  size_t sent;
  int64_t started_us;
  int status;
} call_t;

typedef struct {
  int fd;
  nghttp2_session *session;
  int in_flight;
  int dead;
} conn_t;

static const char *g_path;
static char g_authority[300];
static nghttp2_nv g_headers[6 + MAX_HEADERS];
static size_t g_nheaders;
static uint8_t *g_bodies;
static size_t g_bodies_len, g_next_body;
static int64_t g_deadline_us;
static FILE *g_log;
static long g_started, g_finished;

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t epoch_us(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* The difference between the epoch and the monotonic clock, taken once: log lines give epoch time. */
static int64_t g_epoch_offset;

static void die(const char *what) {
  perror(what);
  exit(2);
}

static nghttp2_nv nv(const char *name, const char *value) {
  nghttp2_nv h = {(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value), NGHTTP2_NV_FLAG_NONE};
  return h;
}

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length, uint32_t *flags, nghttp2_data_source *src, void *user) {
  (void)s; (void)id; (void)user;
  call_t *c = src->ptr;
  size_t n = c->len - c->sent;
  if (n > length) n = length;
  memcpy(buf, c->data + c->sent, n);
  c->sent += n;
  if (c->sent == c->len) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

/* next_body is the next framed message of BODIES, or 0 when they are used up. */
static int next_body(const uint8_t **data, size_t *len) {
  if (g_next_body + 5 > g_bodies_len) return 0;
  uint32_t n = ((uint32_t)g_bodies[g_next_body + 1] << 24) | ((uint32_t)g_bodies[g_next_body + 2] << 16) | ((uint32_t)g_bodies[g_next_body + 3] << 8) | g_bodies[g_next_body + 4];
  if (g_next_body + 5 + n > g_bodies_len) {
    fprintf(stderr, "grpc-drive: a message in BODIES runs past its end\n");
    exit(2);
  }
  *data = g_bodies + g_next_body;
  *len = 5 + n;
  g_next_body += 5 + n;
  return 1;
}

/* start_call submits the next call on a connection; 0 when no call may start any more. */
static int start_call(conn_t *c) {
  if (now_us() >= g_deadline_us) return 0;
  const uint8_t *data;
  size_t len;
  if (!next_body(&data, &len)) return 0;
  call_t *call = calloc(1, sizeof *call);
  call->data = data;
  call->len = len;
  call->status = -1;
  call->started_us = now_us();
  nghttp2_data_provider provider = {.source = {.ptr = call}, .read_callback = read_body};
  int32_t id = nghttp2_submit_request(c->session, NULL, g_headers, g_nheaders, &provider, call);
  if (id < 0) {
    fprintf(stderr, "grpc-drive: submit: %s\n", nghttp2_strerror(id));
    exit(2);
  }
  c->in_flight++;
  g_started++;
  return 1;
}

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t length, int flags, void *user) {
  (void)s; (void)flags;
  conn_t *c = user;
  ssize_t n = write(c->fd, data, length);
  if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? NGHTTP2_ERR_WOULDBLOCK : NGHTTP2_ERR_CALLBACK_FAILURE;
  return n;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *user) {
  (void)flags; (void)user;
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  call_t *call = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
  if (call == NULL) return 0;
  if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
    char text[16];
    size_t n = valuelen < sizeof text - 1 ? valuelen : sizeof text - 1;
    memcpy(text, value, n);
    text[n] = 0;
    call->status = atoi(text);
  }
  return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *user) {
  (void)s; (void)flags; (void)id; (void)data; (void)len; (void)user;
  return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *user) {
  conn_t *c = user;
  call_t *call = nghttp2_session_get_stream_user_data(s, id);
  if (call == NULL) return 0;
  int64_t end = now_us();
  fprintf(g_log, "%lld\t%d\t%lld\n", (long long)(call->started_us + g_epoch_offset), error_code == 0 ? call->status : -1, (long long)(end - call->started_us));
  free(call);
  c->in_flight--;
  g_finished++;
  start_call(c);
  return 0;
}

static int connect_to(const char *host, const char *port) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
  int rc = getaddrinfo(host, port, &hints, &res);
  if (rc != 0) {
    fprintf(stderr, "grpc-drive: %s: %s\n", host, gai_strerror(rc));
    exit(2);
  }
  int fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
  if (fd < 0) die("socket");
  if (connect(fd, res->ai_addr, res->ai_addrlen) != 0) die("connect");
  freeaddrinfo(res);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--version") == 0) {
    printf("grpc-drive on libnghttp2 %s\n", nghttp2_version(0)->version_str);
    return 0;
  }
  if (argc < 9) {
    fprintf(stderr, "usage: grpc-drive HOST PORT PATH CONNECTIONS STREAMS DURATION_MS BODIES LOG [HEADER: VALUE]...\n");
    return 2;
  }
  const char *host = argv[1], *port = argv[2];
  g_path = argv[3];
  int connections = atoi(argv[4]), streams = atoi(argv[5]);
  long duration_ms = atol(argv[6]);
  if (connections < 1 || streams < 1 || duration_ms < 0) {
    fprintf(stderr, "grpc-drive: CONNECTIONS and STREAMS must be positive, DURATION_MS at least 0\n");
    return 2;
  }
  FILE *bf = fopen(argv[7], "rb");
  if (bf == NULL) die(argv[7]);
  struct stat st;
  fstat(fileno(bf), &st);
  g_bodies_len = (size_t)st.st_size;
  g_bodies = malloc(g_bodies_len + 1);
  if (fread(g_bodies, 1, g_bodies_len, bf) != g_bodies_len) die("read BODIES");
  fclose(bf);
  g_log = fopen(argv[8], "w");
  if (g_log == NULL) die(argv[8]);

  snprintf(g_authority, sizeof g_authority, "%s:%s", host, port);
  g_headers[g_nheaders++] = nv(":method", "POST");
  g_headers[g_nheaders++] = nv(":scheme", "http");
  g_headers[g_nheaders++] = nv(":authority", g_authority);
  g_headers[g_nheaders++] = nv(":path", g_path);
  g_headers[g_nheaders++] = nv("content-type", "application/grpc+proto");
  g_headers[g_nheaders++] = nv("te", "trailers");
  for (int i = 9; i < argc && g_nheaders < sizeof g_headers / sizeof g_headers[0]; i++) {
    char *colon = strchr(argv[i], ':');
    if (colon == NULL) {
      fprintf(stderr, "grpc-drive: a header is NAME: VALUE, not %s\n", argv[i]);
      return 2;
    }
    *colon = 0;
    char *value = colon + 1;
    while (*value == ' ') value++;
    g_headers[g_nheaders++] = nv(argv[i], value);
  }

  nghttp2_session_callbacks *cbs;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_send_callback(cbs, on_send);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);

  conn_t *conns = calloc((size_t)connections, sizeof *conns);
  struct pollfd *fds = calloc((size_t)connections, sizeof *fds);
  for (int i = 0; i < connections; i++) {
    conns[i].fd = connect_to(host, port);
    nghttp2_session_client_new(&conns[i].session, cbs, &conns[i]);
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}, {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    nghttp2_submit_settings(conns[i].session, NGHTTP2_FLAG_NONE, settings, 2);
  }
  g_epoch_offset = epoch_us() - now_us();
  g_deadline_us = duration_ms == 0 ? INT64_MAX : now_us() + duration_ms * 1000;
  for (int i = 0; i < connections; i++)
    for (int k = 0; k < streams; k++) start_call(&conns[i]);

  uint8_t buf[65536];
  for (;;) {
    int open = 0;
    for (int i = 0; i < connections; i++) {
      conn_t *c = &conns[i];
      if (!c->dead && nghttp2_session_send(c->session) != 0) c->dead = 1;
      fds[i].fd = c->dead || c->in_flight == 0 ? -1 : c->fd;
      fds[i].events = POLLIN | (nghttp2_session_want_write(c->session) ? POLLOUT : 0);
      fds[i].revents = 0;
      if (fds[i].fd >= 0) open++;
    }
    if (open == 0) break;
    if (poll(fds, (nfds_t)connections, 1000) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    for (int i = 0; i < connections; i++) {
      conn_t *c = &conns[i];
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        for (;;) {
          ssize_t n = read(c->fd, buf, sizeof buf);
          if (n > 0) {
            if (nghttp2_session_mem_recv(c->session, buf, (size_t)n) < 0) {
              c->dead = 1;
              break;
            }
            continue;
          }
          if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) c->dead = 1;
          break;
        }
      }
    }
  }
  fclose(g_log);
  long unfinished = g_started - g_finished;
  if (unfinished > 0) fprintf(stderr, "grpc-drive: %ld of %ld calls did not finish (a connection closed)\n", unfinished, g_started);
  int ran_out = duration_ms > 0 && g_next_body >= g_bodies_len && now_us() < g_deadline_us;
  if (ran_out) fprintf(stderr, "grpc-drive: BODIES ran out after %ld calls, before the duration passed\n", g_started);
  return unfinished > 0 || ran_out ? 1 : 0;
}
