/**
 * Linux's numbers for sockets, epoll and eventfd, as its headers give
 * them (the same on x86_64 and aarch64): plain data for the native engine's
 * libc calls (engine/linux/ffi.ts). errno values are in errno.ts.
 *
 * @module
 */

/** Socket, TCP and epoll constants by their C names. */
export const C = {
  AF_INET: 2,
  AF_INET6: 10,
  SOL_SOCKET: 1,
  SO_REUSEADDR: 2,
  SO_ERROR: 4,
  SO_KEEPALIVE: 9,
  SO_REUSEPORT: 15,
  IPPROTO_TCP: 6,
  TCP_NODELAY: 1,
  EPOLLIN: 0x1,
  EPOLLOUT: 0x4,
  EPOLLERR: 0x8,
  EPOLLHUP: 0x10,
  EPOLLRDHUP: 0x2000,
  EPOLLET: 0x80000000,
  EPOLL_CTL_ADD: 1,
  EPOLL_CTL_DEL: 2,
  EPOLL_CTL_MOD: 3,
} as const;

/** socket(2) type and flags. */
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
/** send(2)/recv(2) flags, shutdown(2) how, eventfd(2) flags. */
export const MSG_NOSIGNAL = 0x4000;
export const MSG_PEEK = 0x2;
export const SHUT_WR = 1;
export const EFD_FLAGS = 0o4000 | 0o2000000;

/** The largest UDP payload over IPv4 (65,535 less the IP and UDP headers). */
export const MAX_DATAGRAM = 65_507;
/** A receive buffer for any datagram and one byte more: a full buffer means a larger one. */
export const DATAGRAM_BUFFER = MAX_DATAGRAM + 1;
