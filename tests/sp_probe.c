/* sp_probe: a small Spread client linked against the real libspread, for the interoperability
 * tests (tests/test_interop_real.py). It reads one command a line and prints one line per result,
 * so that the same script gives comparable transcripts against the real daemon and against ours.
 *
 *   sp_probe SPREAD_NAME PRIVATE_NAME [nomemb]
 *
 * Commands:
 *   join GROUP | leave GROUP
 *   send SERVICE[+SD] GROUP[,GROUP...] BYTES MESS_TYPE   data: the pattern of pattern_byte()
 *   recv [BUFFER_BYTES]            the next message (waits at most 10 s: then "TIMEOUT")
 *   quit                           SP_disconnect
 * Output lines (names in the order the daemon gave them):
 *   CONNECTED #name#daemon
 *   MSG SERVICE from=SENDER groups=G,.. type=T endian=E len=N pattern=ok|bad
 *   MEMB REG cause=JOIN|LEAVE|DISCONNECT|NETWORK group=G members=M,.. me=I gid=A:B:C
 *        changed=NAME vs=LOCAL_INDEX/[N1,N2]/[N3]    (each VS set's members)
 *   MEMB TRANS group=G gid=A:B:C  |  MEMB SELF_LEAVE group=G
 *   ERR CODE [needed=N]  (SP_receive or SP_multicast failed; BUFFER_TOO_SHORT says how much)
 *   SENT N  |  BYE  |  TIMEOUT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include "sp.h"

#define MAX_BYTES 144000
#define MAX_GROUPS 100
#define MAX_MEMBERS 100

static char data[MAX_BYTES];
static char groups[MAX_GROUPS][MAX_GROUP_NAME];
static mailbox mbox;

/* Byte i of a message of n bytes: the receiver checks every byte, and a shifted or cut message
 * does not match. */
static char pattern_byte(int i, int n) { return (char)((i * 31 + n) & 0xff); }

static const char *service_name(service st)
{
    if (st & SAFE_MESS) return "SAFE";
    if (st & AGREED_MESS) return "AGREED";
    if (st & CAUSAL_MESS) return "CAUSAL";
    if (st & FIFO_MESS) return "FIFO";
    if (st & RELIABLE_MESS) return "RELIABLE";
    if (st & UNRELIABLE_MESS) return "UNRELIABLE";
    return "?";
}

static service service_of(const char *name)
{
    static const char *names[] = {"UNRELIABLE", "RELIABLE", "FIFO", "CAUSAL", "AGREED", "SAFE"};
    service st = 0;
    int i;
    for (i = 0; i < 6; i++)
        if (!strncmp(name, names[i], strlen(names[i]))) st = UNRELIABLE_MESS << i;
    if (strstr(name, "+SD")) st |= SELF_DISCARD;
    return st;
}

static void print_list(const char *label, char names[][MAX_GROUP_NAME], int count)
{
    int i;
    printf(" %s=", label);
    for (i = 0; i < count; i++) printf("%s%s", i ? "," : "", names[i]);
}

static void print_membership(service st, const char *group, int count, int16 me, int len)
{
    membership_info info;
    vs_set_info sets[MAX_MEMBERS];
    char members[MAX_MEMBERS][MAX_GROUP_NAME];
    unsigned int local;
    int i, n, ret;

    if (Is_self_leave(st)) { printf("MEMB SELF_LEAVE group=%s\n", group); return; }
    if ((ret = SP_get_memb_info(data, st, &info)) < 0) { printf("ERR memb_info %d\n", ret); return; }
    if (Is_transition_mess(st)) {
        printf("MEMB TRANS group=%s gid=%d:%d:%d\n", group, info.gid.id[0], info.gid.id[1], info.gid.id[2]);
        return;
    }
    printf("MEMB REG cause=%s group=%s", Is_caused_join_mess(st) ? "JOIN" : Is_caused_leave_mess(st) ? "LEAVE"
           : Is_caused_disconnect_mess(st) ? "DISCONNECT" : Is_caused_network_mess(st) ? "NETWORK" : "?", group);
    print_list("members", groups, count);
    printf(" me=%d gid=%d:%d:%d changed=%s vs=", me, info.gid.id[0], info.gid.id[1], info.gid.id[2],
           info.changed_member);
    if ((n = SP_get_vs_sets_info(data, sets, MAX_MEMBERS, &local)) < 0) { printf("ERR%d len=%d\n", n, len); return; }
    printf("%u", local);
    for (i = 0; i < n; i++) {
        if ((ret = SP_get_vs_set_members(data, &sets[i], members, MAX_MEMBERS)) < 0) { printf("/ERR%d", ret); continue; }
        print_list("", members, ret);  /* prints " =a,b": the test reads it as one VS set */
    }
    printf("\n");
}

static void receive_message(int buffer_bytes)
{
    service st = 0;
    char sender[MAX_GROUP_NAME];
    int count, endian, ret, i, ok;
    int16 mess_type;
    fd_set readable;
    struct timeval wait = {10, 0};

    FD_ZERO(&readable);
    FD_SET(mbox, &readable);
    if (SP_poll(mbox) <= 0 && select(mbox + 1, &readable, NULL, NULL, &wait) <= 0) { printf("TIMEOUT\n"); return; }
    ret = SP_receive(mbox, &st, sender, MAX_GROUPS, &count, groups, &mess_type, &endian, buffer_bytes, data);
    if (ret == BUFFER_TOO_SHORT) { printf("ERR BUFFER_TOO_SHORT needed=%d\n", -endian); return; }
    if (ret < 0) { printf("ERR %d\n", ret); return; }
    if (Is_regular_mess(st)) {
        for (ok = 1, i = 0; i < ret; i++) ok &= data[i] == pattern_byte(i, ret);
        printf("MSG %s from=%s", service_name(st), sender);
        print_list("groups", groups, count);
        printf(" type=%d endian=%d len=%d pattern=%s\n", mess_type, endian, ret, ok ? "ok" : "bad");
    } else if (Is_membership_mess(st)) {
        print_membership(st, sender, count, mess_type, ret);
    } else {
        printf("OTHER 0x%x len=%d\n", st, ret);
    }
}

static void send_message(char *svc, char *group_list, int bytes, int mess_type)
{
    int count = 0, i, ret;
    char *name;
    for (name = strtok(group_list, ","); name && count < MAX_GROUPS; name = strtok(NULL, ","))
        snprintf(groups[count++], MAX_GROUP_NAME, "%s", name);
    if (bytes < 0 || bytes > MAX_BYTES) bytes = 0;
    for (i = 0; i < bytes; i++) data[i] = pattern_byte(i, bytes);
    ret = SP_multigroup_multicast(mbox, service_of(svc), count, (const char (*)[MAX_GROUP_NAME])groups,
                                  (int16)mess_type, bytes, data);
    if (ret < 0) printf("ERR %d\n", ret);
    else printf("SENT %d\n", ret);
}

int main(int argc, char **argv)
{
    char line[400], cmd[20], a[40], b[300];
    char private_group[MAX_GROUP_NAME];
    int ret, n, x, y;

    if (argc < 3) { fprintf(stderr, "usage: sp_probe SPREAD_NAME PRIVATE_NAME [nomemb]\n"); return 2; }
    ret = SP_connect(argv[1], argv[2], 0, argc < 4, &mbox, private_group);
    if (ret < 0) { printf("ERR %d\n", ret); return 1; }
    printf("CONNECTED %s\n", private_group);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        n = sscanf(line, "%19s %39s %299s %d %d", cmd, a, b, &x, &y);
        if (n >= 2 && !strcmp(cmd, "join")) ret = SP_join(mbox, a);
        else if (n >= 2 && !strcmp(cmd, "leave")) ret = SP_leave(mbox, a);
        else if (n == 5 && !strcmp(cmd, "send")) send_message(a, b, x, y);
        else if (n >= 1 && !strcmp(cmd, "recv")) receive_message(n >= 2 ? atoi(a) : MAX_BYTES);
        else if (n >= 1 && !strcmp(cmd, "quit")) { SP_disconnect(mbox); printf("BYE\n"); return 0; }
        else printf("ERR unknown command: %s", line);
        if ((!strcmp(cmd, "join") || !strcmp(cmd, "leave")) && ret < 0) printf("ERR %d\n", ret);
        fflush(stdout);
    }
    return 0;
}
