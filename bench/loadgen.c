/*
 * punchcard-loadgen: the open-loop HTTP/1.1 load generator of Punchcard's benchmarks.
 *
 * Why it exists: the benchmark runs the service, PostgreSQL and the load generator on the
 * same two cores, so the measuring tool must cost far less CPU than what it measures. The
 * Python generator (bench/http_load.py) spent about 0.04 ms of CPU per request, a tenth of
 * the machine's work per request; this one is C, like pgbench on the database side: one
 * thread, epoll, no allocation per request.
 *
 * What it does (the same as the Python generator, which bench/http_load.py keeps):
 * - request i is scheduled at start + i/rate; its latency runs from that scheduled time to
 *   the end of its response, so a stalled server is charged for every request that queued
 *   behind the stall (no coordinated omission); the send lag (actual send minus scheduled
 *   time) is kept too, so a generator that falls behind shows instead of a slow server;
 * - keep-alive connections carrying one request at a time, from a pool that grows when all
 *   are busy, up to MAX_CONNECTIONS; past it, requests wait in a FIFO, their clock running;
 * - a periodic timerfd fires at each scheduled time, or at most once a tick (-k, 1 ms from
 *   bench/http_load.py, as its Python generator does), so the loop sleeps in epoll_wait
 *   until a send is due and then sends everything due: no spinning core. The tick matters:
 *   on our 2-core VM each sleep and wake-up costs ~15 us of CPU, far more than the
 *   request's system calls, and one wake-up per tick instead of per request halves the
 *   generator's CPU at 2,000 requests/s;
 * - after the last send, requests still unanswered when the timeout runs out count as
 *   TimeoutError; other failures count by reason under Python's exception names.
 *
 * Usage: punchcard-loadgen [-H 'Name: value']... [-t TIMEOUT_S] [-k TICK_S] [-m METHOD]
 *                          [-b BODY] HOST PORT RATE SECONDS WARMUP_SECONDS PATHS OUT
 *   METHOD is GET unless given; BODY, if given, is sent with every request (with its
 *   Content-Length; give its Content-Type with -H).
 *   HOST is an IPv4 address (also sent in the Host header, with the port).
 *   PATHS has one request path per line; request i asks for line i % (number of lines).
 *   OUT receives one struct record per measured request, in native byte order.
 *   stdout gets "key value" lines: start and first_send (CLOCK_MONOTONIC seconds),
 *   connections (opened in all), cpu (user + system seconds of this process), and one
 *   "error NAME COUNT" line per failure reason.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

enum {
    MAX_CONNECTIONS = 512,
    HEAD_MAX = 8192,
    READ_SIZE = 65536,
    MAX_REASONS = 32,
    MAX_EVENTS = 64,
};

static const uint64_t TIMER_TAG = UINT64_MAX;
static const int64_t NS = 1000000000;

/* One measured request, as bench/http_load.py reads it (struct format "=dddii"). */
struct record {
    double offset;   /* scheduled time, seconds after start */
    double latency;  /* scheduled time to end of response, seconds; -1: no answer */
    double send_lag; /* actual send minus scheduled time, seconds; NaN: never sent */
    int32_t status;  /* HTTP status; 0: no answer */
    int32_t unused;
};

enum conn_state { FREE, CONNECTING, IDLE, BUSY };

struct conn {
    int fd;
    enum conn_state state;
    uint32_t generation; /* tells this connection's epoll events from a closed one's */
    long request;        /* the request in flight, or -1 */
    int idle_pos;
    size_t head_len;     /* bytes of the response head gathered so far */
    long long body_left; /* body bytes still to come; -1 while reading the head */
    int status;
    int closing;         /* the server said it closes after this response */
    char head[HEAD_MAX];
};

struct reason {
    const char *name;
    long count;
};

struct run {
    struct sockaddr_in addr;
    char **paths;
    long npaths;
    char *method; /* "GET " or "POST " (the method and its space) */
    size_t method_len;
    char *tail; /* " HTTP/1.1\r\nHost: ...\r\n<headers>\r\n<body>" */
    size_t tail_len;
    char *sendbuf;
    long total, warmup;
    int64_t start_ns, interval_ns, tick_ns, timeout_ns, deadline_ns;

    int epfd, timerfd;
    long next; /* the next request to schedule */
    long outstanding;
    long *queue; /* FIFO of requests waiting for a connection; each enters once */
    long queue_head, queue_tail;
    struct conn conns[MAX_CONNECTIONS];
    int free_slots[MAX_CONNECTIONS];
    int nfree;
    int idle[MAX_CONNECTIONS];
    int nidle;
    int nopen, opening;
    long connections;

    int64_t *sent_ns, *done_ns; /* per request; 0: not yet */
    int *status;
    struct reason reasons[MAX_REASONS];
    int nreasons;
};

static void die(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fputs("punchcard-loadgen: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    exit(2);
}

static void *checked_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size);
    if (p == NULL)
        die("out of memory");
    return p;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        die("clock_gettime: %s", strerror(errno));
    return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

static int64_t scheduled_ns(const struct run *r, long i)
{
    return r->start_ns + (int64_t)i * r->interval_ns;
}

/* Python's exception names, so both generators count failures alike. */
static const char *errno_reason(int err)
{
    switch (err) {
    case ECONNREFUSED:
        return "ConnectionRefusedError";
    case ECONNRESET:
        return "ConnectionResetError";
    case ECONNABORTED:
        return "ConnectionAbortedError";
    case EPIPE:
        return "BrokenPipeError";
    case ETIMEDOUT:
        return "TimeoutError";
    default:
        return "OSError";
    }
}

static void count_reason(struct run *r, const char *name)
{
    for (int k = 0; k < r->nreasons; k++) {
        if (strcmp(r->reasons[k].name, name) == 0) {
            r->reasons[k].count++;
            return;
        }
    }
    if (r->nreasons == MAX_REASONS)
        die("more than %d kinds of error", MAX_REASONS);
    r->reasons[r->nreasons].name = name;
    r->reasons[r->nreasons].count = 1;
    r->nreasons++;
}

/* A request that will get no answer; only measured ones are counted. */
static void fail_request(struct run *r, long i, const char *reason)
{
    r->outstanding--;
    if (i >= r->warmup)
        count_reason(r, reason);
}

static long queue_length(const struct run *r)
{
    return r->queue_tail - r->queue_head;
}

static long queue_pop(struct run *r)
{
    return r->queue[r->queue_head++];
}

static void idle_push(struct run *r, struct conn *c)
{
    c->state = IDLE;
    c->idle_pos = r->nidle;
    r->idle[r->nidle++] = (int)(c - r->conns);
}

static struct conn *idle_pop(struct run *r)
{
    struct conn *c = &r->conns[r->idle[--r->nidle]];
    c->idle_pos = -1;
    return c;
}

static void idle_remove(struct run *r, struct conn *c)
{
    int last = r->idle[--r->nidle];
    r->idle[c->idle_pos] = last;
    r->conns[last].idle_pos = c->idle_pos;
    c->idle_pos = -1;
}

static uint64_t conn_tag(const struct run *r, const struct conn *c)
{
    return ((uint64_t)c->generation << 32) | (uint64_t)(c - r->conns);
}

static void close_conn(struct run *r, struct conn *c)
{
    if (c->state == IDLE)
        idle_remove(r, c);
    if (c->state == CONNECTING)
        r->opening--;
    else
        r->nopen--;
    if (close(c->fd) != 0 && errno != EINTR)
        die("close: %s", strerror(errno));
    c->fd = -1;
    c->state = FREE;
    c->request = -1;
    c->generation++;
    r->free_slots[r->nfree++] = (int)(c - r->conns);
}

static void maybe_open(struct run *r);

/* The connection broke: its request (if any) fails, and queued requests may need another. */
static void conn_failed(struct run *r, struct conn *c, const char *reason)
{
    if (c->request >= 0)
        fail_request(r, c->request, reason);
    close_conn(r, c);
    maybe_open(r);
}

static void send_request(struct run *r, struct conn *c, long i)
{
    const char *path = r->paths[i % r->npaths];
    size_t path_len = strlen(path);
    memcpy(r->sendbuf, r->method, r->method_len);
    memcpy(r->sendbuf + r->method_len, path, path_len);
    memcpy(r->sendbuf + r->method_len + path_len, r->tail, r->tail_len);
    size_t len = r->method_len + path_len + r->tail_len;

    c->state = BUSY;
    c->request = i;
    c->head_len = 0;
    c->body_left = -1;
    r->sent_ns[i] = now_ns();
    ssize_t sent = send(c->fd, r->sendbuf, len, MSG_NOSIGNAL);
    if (sent < 0)
        conn_failed(r, c, errno_reason(errno));
    else if ((size_t)sent != len)
        /* One small request on a connection whose previous answer was read in full: the
           socket buffer is empty, so a short write means something is badly wrong. */
        conn_failed(r, c, "ShortWriteError");
}

static void conn_ready(struct run *r, struct conn *c)
{
    if (queue_length(r) > 0)
        send_request(r, c, queue_pop(r));
    else
        idle_push(r, c);
}

static void connect_failed(struct run *r, int err)
{
    if (queue_length(r) > 0)
        fail_request(r, queue_pop(r), errno_reason(err));
}

static void open_conn(struct run *r)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        connect_failed(r, errno);
        return;
    }
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        die("setsockopt TCP_NODELAY: %s", strerror(errno));
    if (connect(fd, (const struct sockaddr *)&r->addr, sizeof r->addr) != 0 &&
        errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        connect_failed(r, err);
        return;
    }
    struct conn *c = &r->conns[r->free_slots[--r->nfree]];
    c->fd = fd;
    c->state = CONNECTING;
    c->request = -1;
    c->idle_pos = -1;
    r->opening++;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = conn_tag(r, c)};
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        die("epoll_ctl add: %s", strerror(errno));
}

/* Like the Python generator: one more connection per queued request not yet provided for. */
static void maybe_open(struct run *r)
{
    while (r->nopen + r->opening < MAX_CONNECTIONS && r->opening < queue_length(r))
        open_conn(r);
}

static void on_connected(struct run *r, struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err != 0) {
        close_conn(r, c);
        connect_failed(r, err);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = conn_tag(r, c)};
    if (epoll_ctl(r->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        die("epoll_ctl mod: %s", strerror(errno));
    r->opening--;
    r->nopen++;
    r->connections++;
    conn_ready(r, c);
}

static int header_is(const char *line, size_t name_len, const char *name)
{
    return name_len == strlen(name) && strncasecmp(line, name, name_len) == 0;
}

static int value_has(const char *value, size_t len, const char *word)
{
    size_t word_len = strlen(word);
    for (size_t k = 0; k + word_len <= len; k++)
        if (strncasecmp(value + k, word, word_len) == 0)
            return 1;
    return 0;
}

/* Parses one header line into the connection; returns an error name or NULL. */
static const char *parse_header(struct conn *c, const char *line, size_t len,
                                long long *length)
{
    const char *colon = memchr(line, ':', len);
    if (colon == NULL || colon == line)
        return "HttpParserError";
    size_t name_len = (size_t)(colon - line);
    const char *value = colon + 1;
    size_t value_len = len - name_len - 1;
    while (value_len > 0 && (*value == ' ' || *value == '\t')) {
        value++;
        value_len--;
    }
    if (header_is(line, name_len, "content-length")) {
        long long n = 0;
        size_t k = 0;
        for (; k < value_len && value[k] >= '0' && value[k] <= '9' && n < (1LL << 40); k++)
            n = n * 10 + (value[k] - '0');
        if (k == 0 || (k < value_len && value[k] != ' ' && value[k] != '\t'))
            return "HttpParserError";
        *length = n;
    } else if (header_is(line, name_len, "transfer-encoding")) {
        if (!value_has(value, value_len, "identity"))
            return "ChunkedEncodingError";
    } else if (header_is(line, name_len, "connection")) {
        if (value_has(value, value_len, "close"))
            c->closing = 1;
        else if (value_has(value, value_len, "keep-alive"))
            c->closing = 0;
    }
    return NULL;
}

/* Parses the head (status line and headers, ending in an empty line) of size bytes. */
static const char *parse_head(struct conn *c, size_t size, long long *length)
{
    const char *h = c->head;
    if (size < 13 || memcmp(h, "HTTP/1.", 7) != 0 || (h[7] != '0' && h[7] != '1') ||
        h[8] != ' ')
        return "HttpParserError";
    for (int k = 9; k < 12; k++)
        if (h[k] < '0' || h[k] > '9')
            return "HttpParserError";
    c->status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    c->closing = h[7] == '0'; /* HTTP/1.0 closes unless it says keep-alive */
    *length = -1;
    const char *line = memchr(h, '\n', size);
    const char *end = h + size - 2; /* the final empty line */
    for (line++; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line) + 1);
        size_t len = (size_t)(eol - line);
        if (len > 0 && line[len - 1] == '\r')
            len--;
        const char *error = parse_header(c, line, len, length);
        if (error != NULL)
            return error;
        line = eol + 1;
    }
    if (*length < 0) {
        if (c->status == 204 || c->status == 304)
            *length = 0;
        else
            return "NoContentLengthError";
    }
    return NULL;
}

static void finish_response(struct run *r, struct conn *c, int junk)
{
    long i = c->request;
    r->done_ns[i] = now_ns();
    r->status[i] = c->status;
    r->outstanding--;
    c->request = -1;
    if (c->closing || junk) {
        close_conn(r, c);
        maybe_open(r);
    } else {
        conn_ready(r, c);
    }
}

/* Feeds n bytes of the response; the head is gathered, the body only counted. */
static void on_bytes(struct run *r, struct conn *c, const char *buf, size_t n)
{
    if (c->request < 0) { /* the server talks out of turn: drop the connection */
        conn_failed(r, c, "HttpParserError");
        return;
    }
    if (c->body_left < 0) {
        size_t room = HEAD_MAX - c->head_len;
        size_t take = n < room ? n : room;
        size_t from = c->head_len > 3 ? c->head_len - 3 : 0;
        memcpy(c->head + c->head_len, buf, take);
        c->head_len += take;
        const char *end = memmem(c->head + from, c->head_len - from, "\r\n\r\n", 4);
        if (end == NULL) {
            if (c->head_len == HEAD_MAX)
                conn_failed(r, c, "HttpParserError");
            return;
        }
        size_t head_size = (size_t)(end + 4 - c->head);
        long long length;
        const char *error = parse_head(c, head_size, &length);
        if (error != NULL) {
            conn_failed(r, c, error);
            return;
        }
        c->body_left = length - (long long)(c->head_len - head_size + (n - take));
    } else {
        c->body_left -= (long long)n;
    }
    if (c->body_left <= 0)
        finish_response(r, c, c->body_left < 0);
}

static void on_readable(struct run *r, struct conn *c)
{
    static char buf[READ_SIZE];
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n > 0)
        on_bytes(r, c, buf, (size_t)n);
    else if (n == 0)
        conn_failed(r, c, "ConnectionResetError");
    else if (errno != EAGAIN && errno != EINTR)
        conn_failed(r, c, errno_reason(errno));
}

static void on_conn_event(struct run *r, uint64_t tag, uint32_t events)
{
    struct conn *c = &r->conns[tag & 0xffffffffu];
    if (c->state == FREE || c->generation != (uint32_t)(tag >> 32))
        return; /* closed earlier in this batch of events */
    if (c->state == CONNECTING)
        on_connected(r, c);
    else if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        on_readable(r, c);
}

static void submit(struct run *r, long i)
{
    r->outstanding++;
    if (r->nidle > 0) {
        send_request(r, idle_pop(r), i);
        return;
    }
    r->queue[r->queue_tail++] = i;
    maybe_open(r);
}

static void set_timer(struct run *r, int64_t first_ns, int64_t interval_ns)
{
    struct itimerspec spec = {
        .it_value = {.tv_sec = first_ns / NS, .tv_nsec = first_ns % NS},
        .it_interval = {.tv_sec = interval_ns / NS, .tv_nsec = interval_ns % NS},
    };
    if (timerfd_settime(r->timerfd, TFD_TIMER_ABSTIME, &spec, NULL) != 0)
        die("timerfd_settime: %s", strerror(errno));
}

static void submit_due(struct run *r)
{
    int64_t now = now_ns();
    while (r->next < r->total && scheduled_ns(r, r->next) <= now)
        submit(r, r->next++);
    if (r->next == r->total) {
        set_timer(r, 0, 0); /* disarmed */
        r->deadline_ns = now + r->timeout_ns;
    }
}

static void drain_timer(struct run *r)
{
    uint64_t expirations;
    if (read(r->timerfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
        die("read timerfd: %s", strerror(errno));
}

/* What never came back in time: queued requests and those in flight. */
static void time_out(struct run *r)
{
    while (queue_length(r) > 0)
        fail_request(r, queue_pop(r), "TimeoutError");
    for (int k = 0; k < MAX_CONNECTIONS; k++) {
        struct conn *c = &r->conns[k];
        if (c->state == BUSY && c->request >= 0) {
            fail_request(r, c->request, "TimeoutError");
            c->request = -1;
        }
    }
}

static void run_loop(struct run *r)
{
    struct epoll_event events[MAX_EVENTS];
    while (r->next < r->total || r->outstanding > 0) {
        int timeout = -1;
        if (r->next == r->total) {
            int64_t left = r->deadline_ns - now_ns();
            if (left <= 0) {
                time_out(r);
                return;
            }
            timeout = (int)((left + 999999) / 1000000);
        }
        int n = epoll_wait(r->epfd, events, MAX_EVENTS, timeout);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("epoll_wait: %s", strerror(errno));
        for (int k = 0; k < n; k++) {
            if (events[k].data.u64 == TIMER_TAG)
                drain_timer(r);
            else
                on_conn_event(r, events[k].data.u64, events[k].events);
        }
        if (r->next < r->total)
            submit_due(r);
    }
}

static void write_records(const struct run *r, const char *out)
{
    FILE *f = fopen(out, "wb");
    if (f == NULL)
        die("cannot write %s: %s", out, strerror(errno));
    for (long i = r->warmup; i < r->total; i++) {
        int64_t scheduled = scheduled_ns(r, i);
        struct record rec = {
            .offset = (double)(scheduled - r->start_ns) / 1e9,
            .latency = r->done_ns[i] ? (double)(r->done_ns[i] - scheduled) / 1e9 : -1.0,
            .send_lag = r->sent_ns[i] ? (double)(r->sent_ns[i] - scheduled) / 1e9 : NAN,
            .status = r->done_ns[i] ? r->status[i] : 0,
        };
        if (fwrite(&rec, sizeof rec, 1, f) != 1)
            die("cannot write %s: %s", out, strerror(errno));
    }
    if (fclose(f) != 0)
        die("cannot write %s: %s", out, strerror(errno));
}

static void print_summary(const struct run *r)
{
    struct rusage usage;
    if (getrusage(RUSAGE_SELF, &usage) != 0)
        die("getrusage: %s", strerror(errno));
    double cpu = (double)usage.ru_utime.tv_sec + (double)usage.ru_utime.tv_usec / 1e6 +
                 (double)usage.ru_stime.tv_sec + (double)usage.ru_stime.tv_usec / 1e6;
    int64_t first_send = scheduled_ns(r, r->warmup);
    printf("start %lld.%09lld\n", (long long)(r->start_ns / NS), (long long)(r->start_ns % NS));
    printf("first_send %lld.%09lld\n", (long long)(first_send / NS),
           (long long)(first_send % NS));
    printf("connections %ld\n", r->connections);
    printf("cpu %.6f\n", cpu);
    for (int k = 0; k < r->nreasons; k++)
        printf("error %s %ld\n", r->reasons[k].name, r->reasons[k].count);
    if (fflush(stdout) != 0)
        die("cannot write the summary: %s", strerror(errno));
}

static char *read_file(const char *name, size_t *size)
{
    int fd = open(name, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        die("cannot read %s: %s", name, strerror(errno));
    char *text = checked_calloc((size_t)st.st_size + 1, 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, text + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die("cannot read %s: %s", name, n < 0 ? strerror(errno) : "short read");
        got += (size_t)n;
    }
    close(fd);
    *size = got;
    return text;
}

static void check_path(const char *path, long line)
{
    if (path[0] != '/')
        die("paths line %ld: a path starts with '/'", line);
    for (const char *p = path; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            die("paths line %ld: no spaces or control characters in a path", line);
}

/* One path per line; returns the longest path's length. */
static size_t load_paths(struct run *r, const char *name)
{
    size_t size;
    char *text = read_file(name, &size);
    long lines = 0;
    for (size_t k = 0; k < size; k++)
        lines += text[k] == '\n';
    r->paths = checked_calloc((size_t)lines + 1, sizeof *r->paths);
    size_t longest = 0;
    for (char *line = text; line < text + size;) {
        char *eol = memchr(line, '\n', (size_t)(text + size - line));
        if (eol == NULL)
            eol = text + size;
        *eol = '\0';
        check_path(line, r->npaths + 1);
        if ((size_t)(eol - line) > longest)
            longest = (size_t)(eol - line);
        r->paths[r->npaths++] = line;
        line = eol + 1;
    }
    if (r->npaths == 0)
        die("%s has no paths", name);
    return longest;
}

static void check_header(const char *header)
{
    const char *colon = strchr(header, ':');
    if (colon == NULL || colon == header)
        die("a header is 'Name: value', not '%s'", header);
    for (const char *p = header; *p; p++)
        if (*p == '\r' || *p == '\n')
            die("a header is one line: '%s'", header);
}

/* The request after its path; with a body (-b), its Content-Length and the body itself,
   the same for every request (what varies between requests is the path). */
static void build_tail(struct run *r, const char *host, int port, char **headers, int nheaders,
                       const char *body)
{
    size_t size = 64 + strlen(host) + (body ? 64 + strlen(body) : 0);
    for (int k = 0; k < nheaders; k++) {
        check_header(headers[k]);
        size += strlen(headers[k]) + 2;
    }
    r->tail = checked_calloc(size, 1);
    int n = snprintf(r->tail, size, " HTTP/1.1\r\nHost: %s:%d\r\n", host, port);
    size_t len = (size_t)n;
    for (int k = 0; k < nheaders; k++)
        len += (size_t)snprintf(r->tail + len, size - len, "%s\r\n", headers[k]);
    if (body)
        len += (size_t)snprintf(r->tail + len, size - len, "Content-Length: %zu\r\n\r\n%s",
                                strlen(body), body);
    else
        len += (size_t)snprintf(r->tail + len, size - len, "\r\n");
    r->tail_len = len;
}

static void check_method(const char *method)
{
    if (*method == '\0')
        die("METHOD is a token such as GET or POST, not ''");
    for (const char *p = method; *p; p++)
        if (*p < 'A' || *p > 'Z')
            die("METHOD is a token such as GET or POST, not '%s'", method);
}

static double parse_number(const char *text, const char *what, double low, double high)
{
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !isfinite(value) || value < low ||
        value > high)
        die("%s must be a number from %g to %g, not '%s'", what, low, high, text);
    return value;
}

static void usage(void)
{
    die("usage: punchcard-loadgen [-H 'Name: value']... [-t TIMEOUT_S] [-k TICK_S] [-m METHOD] "
        "[-b BODY] HOST PORT RATE SECONDS WARMUP_SECONDS PATHS OUT");
}

static void setup(struct run *r, int argc, char **argv, const char **out)
{
    char **headers = checked_calloc((size_t)argc, sizeof *headers);
    int nheaders = 0;
    double timeout = 10.0;
    double tick = 0;
    const char *method = "GET";
    const char *body = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "H:t:k:m:b:")) != -1) {
        if (opt == 'H')
            headers[nheaders++] = optarg;
        else if (opt == 'm')
            method = optarg;
        else if (opt == 'b')
            body = optarg;
        else if (opt == 'k')
            tick = parse_number(optarg, "TICK_S", 0, 1);
        else if (opt == 't')
            timeout = parse_number(optarg, "TIMEOUT_S", 0.001, 3600);
        else
            usage();
    }
    if (argc - optind != 7)
        usage();
    char **arg = argv + optind;
    r->addr.sin_family = AF_INET;
    if (inet_pton(AF_INET, arg[0], &r->addr.sin_addr) != 1)
        die("HOST must be an IPv4 address, not '%s'", arg[0]);
    int port = (int)parse_number(arg[1], "PORT", 1, 65535);
    r->addr.sin_port = htons((uint16_t)port);
    double rate = parse_number(arg[2], "RATE", 0.001, 1e6);
    double seconds = parse_number(arg[3], "SECONDS", 0, 86400);
    double warmup = parse_number(arg[4], "WARMUP_SECONDS", 0, 86400);
    /* Truncated like the Python generator's int(seconds * rate). */
    r->warmup = (long)(warmup * rate);
    r->total = r->warmup + (long)(seconds * rate);
    r->interval_ns = (int64_t)(1e9 / rate + 0.5);
    r->tick_ns = (int64_t)(tick * 1e9 + 0.5);
    if (r->tick_ns < r->interval_ns)
        r->tick_ns = r->interval_ns;
    r->timeout_ns = (int64_t)(timeout * 1e9 + 0.5);
    size_t longest = load_paths(r, arg[5]);
    check_method(method);
    r->method_len = strlen(method) + 1;
    r->method = checked_calloc(r->method_len + 1, 1);
    snprintf(r->method, r->method_len + 1, "%s ", method);
    build_tail(r, arg[0], port, headers, nheaders, body);
    r->sendbuf = checked_calloc(r->method_len + longest + r->tail_len, 1);
    *out = arg[6];
    free(headers);
}

static void start(struct run *r)
{
    r->queue = checked_calloc((size_t)r->total, sizeof *r->queue);
    r->sent_ns = checked_calloc((size_t)r->total, sizeof *r->sent_ns);
    r->done_ns = checked_calloc((size_t)r->total, sizeof *r->done_ns);
    r->status = checked_calloc((size_t)r->total, sizeof *r->status);
    for (int k = 0; k < MAX_CONNECTIONS; k++) {
        r->conns[k].fd = -1;
        r->free_slots[k] = MAX_CONNECTIONS - 1 - k;
    }
    r->nfree = MAX_CONNECTIONS;
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (r->epfd < 0)
        die("epoll_create1: %s", strerror(errno));
    r->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (r->timerfd < 0)
        die("timerfd_create: %s", strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TIMER_TAG};
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->timerfd, &ev) != 0)
        die("epoll_ctl add timerfd: %s", strerror(errno));
    /* Like the Python generator, the first request goes 50 ms from now. */
    r->start_ns = now_ns() + NS / 20;
    r->deadline_ns = r->start_ns + r->timeout_ns;
    if (r->total > 0)
        set_timer(r, r->start_ns, r->tick_ns);
}

int main(int argc, char **argv)
{
    static struct run run;
    const char *out;
    setup(&run, argc, argv, &out);
    start(&run);
    run_loop(&run);
    write_records(&run, out);
    print_summary(&run);
    return 0;
}
