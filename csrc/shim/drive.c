/*
 * An event loop's own polling: the latency path of a lone asynchronous
 * request.  Through the poll thread a lone sign_async crosses two wake-ups
 * (submitter -> parked poll thread, poll thread -> the loop's eventfd); the
 * loop that polls for itself crosses one (the device's event fd, or in
 * TIMER mode a timer, wakes the loop directly), like a blocked sign()
 * whose thread drives its own request (wait.c).
 *
 * A driven request is counted in dev->driven from submit until its answer
 * or its TIMEOUT enters the ring (ring.c), or until it has to wait in the
 * pending FIFO (dispatch.c), which the poll threads serve.  While every
 * request in flight is self-polled the poll threads stay parked.  A loop
 * that stops running with its request in flight (an application's loop
 * that is never run again) costs that request latency, never the answer:
 * the completion thread's wait, which times out every 50 ms while nothing
 * completes, then looks at the device (qatpy_wait_unclaimed); it wakes
 * sooner when a driven request's deadline falls due, which that look
 * checks.  A loop that is only busy for a while finds its fd readable when
 * it comes back.  Anything else in flight makes it ordinary work again: the
 * poll threads serve the device, the loop's request included, and the loop
 * learns of it through the ring's eventfd like any other completion.
 *
 * The loop watches one fd: an epoll set holding every instance's event fd
 * (edge-triggered, so a qatlib that left its eventfd readable after the
 * poll could not make the loop spin) and a timerfd that TIMER mode arms for
 * one poll delay after the submit and after each fruitless look (at most
 * QPS_DRIVE_TIMER_LOOKS of them, then the poll threads take over).  The event
 * fds report there only while driven requests are in flight (armed at a
 * driven submit, disarmed by the first look that finds none): a stream that
 * the poll threads serve does not wake the loop on every interrupt.  Arming
 * re-evaluates an fd's readiness, so an answer signalled before it is not
 * missed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "shim_internal.h"

/* TIMER mode: the loop looks every poll delay, and each look is a loop
 * wake-up in Python (several us of CPU, against about one for a poll
 * thread's look in C).  A device answer slower than this many looks (160 us
 * at the default 20 us delay; P-256 and RSA-2048 on QAT hardware take less)
 * is left to the poll threads: the loop's extra CPU per request is bounded,
 * and a slow answer pays one more wake-up, small beside its service time. */
#define QPS_DRIVE_TIMER_LOOKS 8

int qps_drive_open(struct qatpy_device *dev, char *err, size_t errlen)
{
    dev->drive_epfd = epoll_create1(EPOLL_CLOEXEC);
    dev->drive_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (dev->drive_epfd < 0 || dev->drive_tfd < 0)
        goto fail;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    if (epoll_ctl(dev->drive_epfd, EPOLL_CTL_ADD, dev->drive_tfd, &ev) != 0)
        goto fail;
    for (uint32_t i = 0; i < dev->ninst; i++) {
        if (dev->inst[i].event_fd < 0)
            continue;
        ev = (struct epoll_event){.events = 0, .data.u32 = i}; /* disarmed */
        /* EEXIST: two instances that report one fd (one event-mode
         * instance per ring bank, facts 6.12) are watched once. */
        if (epoll_ctl(dev->drive_epfd, EPOLL_CTL_ADD, dev->inst[i].event_fd, &ev) != 0 &&
            errno != EEXIST)
            goto fail;
    }
    atomic_store(&dev->drive_armed, false);
    return QATPY_OK;
fail:
    qps_errf(err, errlen, "cannot set up the event loop's poll fd: %s", strerror(errno));
    qps_drive_close(dev);
    return QATPY_ERR_NOMEM;
}

void qps_drive_close(struct qatpy_device *dev)
{
    if (dev->drive_epfd >= 0)
        close(dev->drive_epfd);
    if (dev->drive_tfd >= 0)
        close(dev->drive_tfd);
    dev->drive_epfd = -1;
    dev->drive_tfd = -1;
}

/* TIMER mode: make the loop look again after one poll delay. */
static void arm_timer(struct qatpy_device *dev)
{
    uint64_t ns = atomic_load(&dev->poll_delay_ns);
    if (ns < 1000)
        ns = 1000; /* 0 would disarm it */
    struct itimerspec its = {.it_value = {.tv_sec = (time_t)(ns / 1000000000ULL),
                                          .tv_nsec = (long)(ns % 1000000000ULL)}};
    timerfd_settime(dev->drive_tfd, 0, &its, NULL);
}

/* Let the instances' event fds report in drive_epfd (on) or not (off). */
static void set_armed(struct qatpy_device *dev, bool on)
{
    for (uint32_t i = 0; i < dev->ninst; i++) {
        if (dev->inst[i].event_fd < 0)
            continue;
        struct epoll_event ev = {.events = on ? EPOLLIN | EPOLLET : 0, .data.u32 = i};
        epoll_ctl(dev->drive_epfd, EPOLL_CTL_MOD, dev->inst[i].event_fd, &ev);
    }
    atomic_store(&dev->drive_armed, on);
}

int64_t qps_drive_wait_cap(struct qatpy_device *dev, int64_t timeout_ns)
{
    if (!atomic_load(&dev->driven))
        return timeout_ns;
    /* Only instances with something in flight: the look (qps_drive_once)
     * checks, and so refreshes, their next_deadline; an idle instance's may
     * be stale (it is recomputed when it is next due, by a poll). */
    uint64_t due = UINT64_MAX;
    for (uint32_t i = 0; i < dev->ninst; i++) {
        if (atomic_load(&dev->inst[i].inflight) == 0)
            continue;
        uint64_t d = atomic_load_explicit(&dev->inst[i].next_deadline, memory_order_relaxed);
        if (d < due)
            due = d;
    }
    if (due == UINT64_MAX)
        return timeout_ns;
    uint64_t now = qps_now_ns();
    int64_t until = due <= now ? 0 : (int64_t)(due - now);
    return timeout_ns < 0 || until < timeout_ns ? until : timeout_ns;
}

void qps_drive_hand_over(struct qatpy_device *dev)
{
    atomic_store(&dev->drive_handed, 1);
    qps_wake_all(dev);
}

int qatpy_drive_fd(qatpy_device *dev) { return dev ? dev->drive_epfd : -1; }

int qatpy_submit_driven(qatpy_device *dev, qatpy_key *key, int op, int encoding, int hash_id,
                        const uint8_t *input, size_t input_len, uint64_t tag)
{
    uint8_t block[QATPY_MAX_RESULT];
    uint32_t block_len;
    int rc = qps_op_block(dev, key, op, encoding, hash_id, input, input_len, block, &block_len);
    if (rc != QATPY_SUBMIT_OK)
        return rc;
    /* Driven only when it is alone and someone else would otherwise have
     * to wake up for it; BUSY pollers never park, MANUAL has no threads. */
    int mode = atomic_load(&dev->poll_mode);
    bool driven = dev->drive_epfd >= 0 && (mode == QATPY_POLL_TIMER || mode == QATPY_POLL_EVENT) &&
                  !qps_others_work(dev);
    rc = qps_submit(dev, key, op, block, block_len, tag, NULL, driven);
    if (rc == QATPY_SUBMIT_OK && driven) {
        if (mode == QATPY_POLL_TIMER) {
            arm_timer(dev);
        } else {
            /* After the submit's count (see qatpy_drive_tick's disarm). */
            pthread_mutex_lock(&dev->drive_lock);
            if (!atomic_load(&dev->drive_armed))
                set_armed(dev, true);
            pthread_mutex_unlock(&dev->drive_lock);
        }
    }
    return rc;
}

/* Completions that entered the ring since `seq0`: answers, and also what a
 * look pushes without an answer (TIMEOUTs of the deadline check, requests
 * the pending FIFO failed), which the caller must drain as well. */
static int pushed(struct qatpy_device *dev, uint64_t seq0)
{
    uint64_t n = atomic_load(&dev->seq) - seq0;
    return n > (uint64_t)INT32_MAX ? INT32_MAX : (int)n;
}

int qatpy_drive_tick(qatpy_device *dev)
{
    if (!dev || dev->drive_epfd < 0 || qps_forked(dev))
        return -1;
    /* Take what woke us: the timer's expirations, the event fds' edges. */
    uint64_t expirations;
    while (read(dev->drive_tfd, &expirations, sizeof expirations) < 0 && errno == EINTR) {
    }
    struct epoll_event evs[16];
    int n;
    do {
        n = epoll_wait(dev->drive_epfd, evs, 16, 0);
    } while (n == 16 || (n < 0 && errno == EINTR));
    uint64_t seq0 = atomic_load(&dev->seq);
    qps_tl_drains_next = true; /* the caller drains next (qatpy_shim.h) */
    int got = qps_drive_once(dev);
    qps_tl_drains_next = false;
    if (got < 0)
        return got;
    if (atomic_load(&dev->driven)) {
        if (atomic_load(&dev->poll_mode) == QATPY_POLL_TIMER && !atomic_load(&dev->drive_handed)) {
            if (got > 0) {
                atomic_store(&dev->drive_looks, 0);
            } else if (atomic_fetch_add(&dev->drive_looks, 1) + 1 >= QPS_DRIVE_TIMER_LOOKS) {
                /* A slow answer: the poll threads take the driven requests. */
                atomic_fetch_add(&dev->st.drive_handovers, 1);
                qps_drive_hand_over(dev);
                return pushed(dev, seq0);
            }
            arm_timer(dev); /* still waiting: look again after one poll delay */
        }
    } else if (atomic_load(&dev->drive_armed)) {
        /* No driven request left: stop reporting interrupts.  Checked again
         * under the lock: a driven submit counts before it arms, so either
         * this sees its count or it re-arms after this. */
        pthread_mutex_lock(&dev->drive_lock);
        if (atomic_load(&dev->drive_armed) && !atomic_load(&dev->driven))
            set_armed(dev, false);
        pthread_mutex_unlock(&dev->drive_lock);
    }
    return pushed(dev, seq0);
}
