/* spread_flooder: one Spread client for both daemons in bench/side_by_side.py, linked against the
 * real libspread, so that the client costs the same on both sides of the comparison.
 *
 *   spread_flooder recv SPREAD_NAME USER GROUP COUNT IDLE_S
 *       join GROUP, print "joined", count COUNT data messages (give up IDLE_S seconds after the
 *       last one), print "RESULT received=N rate=MSGS_PER_S" (first to last message)
 *   spread_flooder send SPREAD_NAME USER GROUP COUNT BYTES AGREED|SAFE MEMBERS WINDOW
 *       join GROUP, wait until it has MEMBERS members, print "ready", read one line, send COUNT
 *       messages with never more than WINDOW of its own undelivered, wait for the last one,
 *       print "RESULT sent=N rate=MSGS_PER_S"
 * Exit 0 when the count was reached; 1 short; 2 usage; 3 a Spread error; 4 the group never filled.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/select.h>
#include <sys/time.h>
#include "sp.h"

#define BUFFER_BYTES 144000
#define CONNECT_TRIES_S 30

static char buffer[BUFFER_BYTES];
static char groups[100][MAX_GROUP_NAME];
static char sender[MAX_GROUP_NAME];
static char me[MAX_GROUP_NAME];
static mailbox mbox;

static double now_s(void)
{
    struct timeval t;
    gettimeofday(&t, NULL);
    return t.tv_sec + t.tv_usec / 1e6;
}

/* Something to receive now, or within wait_s seconds. */
static int readable(double wait_s)
{
    fd_set fds;
    struct timeval t;
    if (SP_poll(mbox) > 0) return 1;
    t.tv_sec = (long)wait_s;
    t.tv_usec = (long)((wait_s - (long)wait_s) * 1e6);
    FD_ZERO(&fds);
    FD_SET(mbox, &fds);
    return select(mbox + 1, &fds, NULL, NULL, &t) > 0;
}

/* The next message; its service type, *count the number of groups (or members). */
static service next_message(int *count)
{
    service st = 0;
    int16 mess_type;
    int endian, ret = SP_receive(mbox, &st, sender, 100, count, groups, &mess_type, &endian, BUFFER_BYTES, buffer);
    if (ret < 0) {
        SP_error(ret);
        exit(3);
    }
    return st;
}

static void connect_and_join(const char *spread_name, const char *user, const char *group, int membership)
{
    double give_up = now_s() + CONNECT_TRIES_S;
    int ret;
    /* the daemons of a fresh run may still be starting */
    while ((ret = SP_connect(spread_name, user, 0, membership, &mbox, me)) == COULD_NOT_CONNECT && now_s() < give_up)
        usleep(200000);
    if (ret < 0 || (ret = SP_join(mbox, group)) < 0) {
        SP_error(ret);
        exit(3);
    }
}

static int receive_batch(int count, double idle_s)
{
    int got = 0, n;
    double first = 0, last = 0;
    service st;
    printf("joined\n");
    fflush(stdout);
    while (got < count && readable(got ? idle_s : 300)) {
        st = next_message(&n);  /* sp.h's Is_* macros read their argument twice: never a call in them */
        if (Is_regular_mess(st)) {
            last = now_s();
            if (got++ == 0) first = last;
        }
    }
    printf("RESULT received=%d rate=%.0f\n", got, got > 1 && last > first ? (got - 1) / (last - first) : 0.0);
    return got == count ? 0 : 1;
}

static int send_batch(const char *group, int count, int bytes, service kind, int members, int window)
{
    int n = 0, sent, own = 0, ret;
    service st = 0;
    double start, give_up = now_s() + 60;
    while (!(Is_reg_memb_mess(st) && n >= members)) {
        if (now_s() > give_up) {
            printf("the group %s never had %d members\n", group, members);
            return 4;
        }
        st = readable(0.5) ? next_message(&n) : 0;
    }
    printf("ready\n");
    fflush(stdout);
    if (!fgets(buffer, sizeof buffer, stdin)) return 2;
    memset(buffer, 'x', bytes);
    start = now_s();
    for (sent = 1; sent <= count; sent++) {
        if ((ret = SP_multicast(mbox, kind, group, 0, bytes, buffer)) < 0) {
            SP_error(ret);
            return 3;
        }
        /* flow control by our own messages coming back: no session reaches the daemon's limit */
        while (sent - own > window || (sent == count && own < count)) {
            st = next_message(&n);
            if (Is_regular_mess(st) && strcmp(sender, me) == 0) own++;
        }
    }
    printf("RESULT sent=%d rate=%.0f\n", count, count / (now_s() - start));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 7 && strcmp(argv[1], "recv") == 0) {
        connect_and_join(argv[2], argv[3], argv[4], 0);
        return receive_batch(atoi(argv[5]), atof(argv[6]));
    }
    if (argc == 10 && strcmp(argv[1], "send") == 0) {
        int bytes = atoi(argv[6]);
        if (bytes < 1 || bytes > 100000) bytes = 1000;
        connect_and_join(argv[2], argv[3], argv[4], 1);
        return send_batch(argv[4], atoi(argv[5]), bytes, strcmp(argv[7], "SAFE") == 0 ? SAFE_MESS : AGREED_MESS,
                          atoi(argv[8]), atoi(argv[9]));
    }
    fprintf(stderr, "usage: spread_flooder recv SPREAD USER GROUP COUNT IDLE_S\n"
                    "       spread_flooder send SPREAD USER GROUP COUNT BYTES AGREED|SAFE MEMBERS WINDOW\n");
    return 2;
}
