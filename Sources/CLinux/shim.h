#ifndef CHATD_CLINUX_SHIM_H
#define CHATD_CLINUX_SHIM_H
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#endif
