"""Request/response: one bounded request and one answer per stream.

:class:`Requests` serves ``/motus/status/1``, ``/motus/blocks/1`` and ``/motus/peers/1``
with the node's handlers (misbehaviour is scored: floods, oversize and malformed
requests) and asks peers the same questions, decoding answers with the limits of
:mod:`p2p.reqresp` and :mod:`p2p.discovery` (a bad answer penalises the peer).
docs/p2p.md, "Request/response".
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import outcome
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2p import discovery, reqresp
from p2p.discovery import PeerAddrs, PeerBook
from p2p.errors import (
    BadRequest,
    BadResponse,
    MessageTooLarge,
    NotRunning,
    PeerBanned,
    PeerUnreachable,
    RemoteError,
    RequestError,
    RequestTimeout,
    WrongChain,
)
from p2p.reqresp import BlocksHandler, ChainStatus, ProposalHandler, StatusHandler
from p2p.scoring import Misbehaviour, PeerScoreboard
from p2p.streams import close, reset

if TYPE_CHECKING:
    from p2p.config import P2PConfig

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# How long after its timeout a caller waits for an exchange to end before leaving it
# (its stream reset and close are bounded by 1 s each, p2p.streams).
ABANDON_GRACE_S = 2.5
# Exchanges with one peer left running (stuck in the library) before further requests
# to that peer fail at once instead of leaving one more task behind.
ABANDONED_LIMIT = 4


class Requests:
    """The request/response protocols of one host, both sides.

    ``penalise(peer_id, reason)`` scores misbehaviour; ``running()`` says whether the
    host runs (requests need it); ``peer_book`` answers peer-exchange requests.
    """

    def __init__(
        self,
        host: IHost,
        config: P2PConfig,
        *,
        scoreboard: PeerScoreboard,
        peer_book: PeerBook,
        penalise: Callable[[str, str], None],
        running: Callable[[], bool],
        on_wedged: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._host = host
        self.config = config
        self.scoreboard = scoreboard
        self._peer_book = peer_book
        self._penalise = penalise
        self._running = running
        # ``await on_wedged(peer_id)``: an exchange with the peer did not end
        # ABANDON_GRACE_S after it was cancelled (its connection is wedged).
        self._on_wedged = on_wedged
        self._status_handler: StatusHandler | None = None
        self._blocks_handler: BlocksHandler | None = None
        self._proposal_handler: ProposalHandler | None = None
        self._inbound_requests: dict[str, int] = {}
        self._nursery: trio.Nursery | None = None
        self._abandoned: dict[str, int] = {}  # peer -> exchanges left running (_request)
        host.set_stream_handler(reqresp.STATUS_PROTOCOL, self.serve_status)
        host.set_stream_handler(reqresp.BLOCKS_PROTOCOL, self.serve_blocks)
        host.set_stream_handler(discovery.PEERS_PROTOCOL, self.serve_peers)
        host.set_stream_handler(reqresp.PROPOSAL_PROTOCOL, self.serve_proposal)

    def set_status_handler(self, handler: StatusHandler) -> None:
        """Serve ``/motus/status/1`` with ``async handler(peer_id) -> Head``."""
        self._status_handler = handler

    def set_blocks_handler(self, handler: BlocksHandler) -> None:
        """Serve ``/motus/blocks/1`` with ``async handler(peer_id, start, end) -> [bytes]``."""
        self._blocks_handler = handler

    def set_proposal_handler(self, handler: ProposalHandler) -> None:
        """Serve ``/motus/proposal/1`` with ``async handler(peer_id, hash, indices)``."""
        self._proposal_handler = handler

    async def serve_proposal(self, stream: INetStream) -> None:
        async def answer(peer: str, request: bytes) -> bytes:
            block_hash, indices = reqresp.decode_proposal_request(request)
            if self._proposal_handler is None:
                return reqresp.encode_error(reqresp.ERR_UNAVAILABLE, "no proposal handler")
            items = await self._proposal_handler(peer, block_hash, indices)
            if items is None:
                return reqresp.encode_error(reqresp.ERR_UNKNOWN_PROPOSAL, block_hash.hex())
            if len(items) != max(len(indices), 1):
                raise TypeError("proposal handler must return one item per index")
            return reqresp.encode_proposal_response(items)

        await self._serve(stream, answer, reqresp.MAX_PROPOSAL_REQUEST_SIZE)

    async def serve_status(self, stream: INetStream) -> None:
        async def answer(peer: str, request: bytes) -> bytes:
            # A peer on another chain gets our answer (with our chain id) and
            # drops us itself; banning it here would cut the answer off.
            reqresp.decode_status_request(request)
            if self._status_handler is None:
                return reqresp.encode_error(reqresp.ERR_UNAVAILABLE, "no status handler")
            head = await self._status_handler(peer)
            status = ChainStatus(self.config.chain_id, head.height, head.hash)
            return reqresp.encode_status_response(status)

        await self._serve(stream, answer)

    async def serve_blocks(self, stream: INetStream) -> None:
        async def answer(peer: str, request: bytes) -> bytes:
            start, end = reqresp.compute_served_range(*reqresp.decode_blocks_request(request))
            if self._blocks_handler is None:
                return reqresp.encode_error(reqresp.ERR_UNAVAILABLE, "no blocks handler")
            blocks = list(await self._blocks_handler(peer, start, end))
            if len(blocks) > end - start + 1 or not all(isinstance(b, bytes) for b in blocks):
                raise TypeError("blocks handler must return at most end-start+1 bytes items")
            try:
                return reqresp.encode_blocks_response(reqresp.fit_blocks_response(blocks))
            except MessageTooLarge as exc:
                return reqresp.encode_error(reqresp.ERR_TOO_LARGE, exc.message)

        await self._serve(stream, answer)

    async def _serve(
        self, stream: INetStream, answer: Callable[[str, bytes], Awaitable[bytes]],
        request_limit: int = reqresp.MAX_REQUEST_SIZE,
    ) -> None:
        """Read one bounded request, answer it, close. Misbehaviour is scored."""
        peer = stream.muxed_conn.peer_id.to_base58()
        if self.scoreboard.is_banned(peer):
            await reset(stream)
            return
        in_flight = self._inbound_requests.get(peer, 0)
        if in_flight >= self.config.max_inbound_requests_per_peer:
            self._penalise(peer, Misbehaviour.REQUEST_FLOOD)
            await reset(stream)
            return
        self._inbound_requests[peer] = in_flight + 1
        try:
            with trio.move_on_after(self.config.request_timeout) as scope:
                try:
                    request = await reqresp.read_frame(stream, request_limit)
                except MessageTooLarge:
                    self._penalise(peer, Misbehaviour.OVERSIZE_REQUEST)
                    await reset(stream)
                    return
                try:
                    response = await answer(peer, request)
                except BadRequest as exc:
                    self._penalise(peer, Misbehaviour.MALFORMED_REQUEST)
                    response = reqresp.encode_error(reqresp.ERR_BAD_REQUEST, exc.message)
                except Exception:
                    logger.exception("request handler failed for peer %s", peer)
                    response = reqresp.encode_error(reqresp.ERR_INTERNAL, "handler failed")
                await reqresp.write_frame(stream, response)
                await stream.close()
            if scope.cancelled_caught:
                await reset(stream)
        except Exception as exc:  # the peer hung up or reset mid-exchange
            logger.debug("request stream from %s failed: %s", peer, exc)
            await reset(stream)
        finally:
            remaining = self._inbound_requests.get(peer, 1) - 1
            if remaining > 0:
                self._inbound_requests[peer] = remaining
            else:
                self._inbound_requests.pop(peer, None)

    async def serve_peers(self, stream: INetStream) -> None:
        async def answer(peer: str, request: bytes) -> bytes:
            wanted = discovery.decode_peers_request(request)
            shared = self._peer_book.shareable(
                wanted, exclude={peer}, is_banned=self.scoreboard.is_banned
            )
            return discovery.encode_peers_response(shared)

        await self._serve(stream, answer)

    async def request_peers(self, peer_id: str) -> list[PeerAddrs]:
        """Ask ``peer_id`` for peers it reached recently (at most 32, with addresses).

        Unusable addresses are dropped; a malformed or oversized answer raises
        ``BadResponse`` and penalises the peer. Other failures raise a
        ``RequestError`` subclass.
        """
        wanted = discovery.MAX_PEERS_PER_RESPONSE
        raw = await self._request(
            peer_id,
            discovery.PEERS_PROTOCOL,
            discovery.encode_peers_request(wanted),
            discovery.MAX_PEERS_RESPONSE_SIZE,
        )
        return self._decode_or_penalise(
            peer_id, lambda data: discovery.decode_peers_response(data, wanted), raw
        )

    async def request_status(self, peer_id: str) -> ChainStatus:
        """Ask ``peer_id`` for its head. ``WrongChain`` if it is on another chain.

        Raises a ``RequestError`` subclass on failure (timeout, unreachable,
        banned, bad or error response).
        """
        payload = reqresp.encode_status_request(self.config.chain_id)
        raw = await self._request(
            peer_id, reqresp.STATUS_PROTOCOL, payload, reqresp.MAX_STATUS_RESPONSE_SIZE
        )
        status = self._decode_or_penalise(peer_id, reqresp.decode_status_response, raw)
        if status.chain_id != self.config.chain_id:
            self._penalise(peer_id, Misbehaviour.WRONG_CHAIN)
            raise WrongChain(
                f"peer is on chain {status.chain_id}, we are on {self.config.chain_id}"
            )
        return status

    async def request_blocks(self, peer_id: str, start: int, end: int) -> list[bytes]:
        """Ask ``peer_id`` for blocks ``start``..``end`` inclusive.

        The answer holds consecutive blocks from ``start``: at most 128 and
        8 MiB, possibly fewer (none if the peer lacks them); ask again from
        where it stopped. Raises ``BadRequest`` for an invalid range, else a
        ``RequestError`` subclass on failure.
        """
        if not 0 <= start <= end <= reqresp.MAX_UINT64:
            raise BadRequest(f"invalid height range {start}..{end}")
        served_start, served_end = reqresp.compute_served_range(start, end)
        payload = reqresp.encode_blocks_request(start, end)
        raw = await self._request(
            peer_id, reqresp.BLOCKS_PROTOCOL, payload, reqresp.MAX_BLOCKS_RESPONSE_BYTES
        )
        requested = served_end - served_start + 1
        return self._decode_or_penalise(
            peer_id, lambda data: reqresp.decode_blocks_response(data, requested), raw
        )

    async def request_proposal(
        self, peer_id: str, block_hash: bytes, indices: list[int], timeout: float | None = None,
    ) -> list[bytes]:
        """Ask ``peer_id`` for the attestations at ``indices`` of proposal ``block_hash``,
        or for the whole block when ``indices`` is empty; one item per index (one for
        the block). p2p does not check the items against the proposal (the node does).
        ``RemoteError`` ``unknown_proposal`` when the peer does not hold it; other
        failures raise a ``RequestError`` subclass."""
        if len(indices) > reqresp.MAX_PROPOSAL_INDICES:
            raise BadRequest(f"more than {reqresp.MAX_PROPOSAL_INDICES} indices")
        payload = reqresp.encode_proposal_request(block_hash, indices)
        raw = await self._request(peer_id, reqresp.PROPOSAL_PROTOCOL, payload,
                                  reqresp.MAX_PROPOSAL_RESPONSE_BYTES, timeout)
        return self._decode_or_penalise(
            peer_id, lambda data: reqresp.decode_proposal_response(data, len(indices)), raw)

    def attach(self, nursery: trio.Nursery | None) -> None:
        """Run each request's exchange in ``nursery`` (the host's, while it runs), so a
        caller can leave an exchange the library will not let go of (see ``_request``)."""
        self._nursery = nursery

    def abandoned(self, peer_id: str) -> int:
        """Exchanges with ``peer_id`` given up on that have not ended yet."""
        return self._abandoned.get(peer_id, 0)

    async def _request(
        self, peer_id: str, protocol: TProtocol, payload: bytes, limit: int,
        timeout: float | None = None,
    ) -> bytes:
        """One exchange with ``peer_id``, over within ``timeout`` (+ ABANDON_GRACE_S) for
        the caller whatever the connection does.

        The exchange runs in the host's nursery and the caller waits for it. py-libp2p's
        ``new_stream`` resets a stream whose negotiation failed or was cancelled in a
        shielded scope: on a wedged connection (its writer blocked on a full socket,
        the peer no longer reading) that reset never returns, and a caller that awaited
        it directly hung with it, deaf to any timeout. A node's block sync hung so
        (docs/p2p.md, "Requests on a wedged connection"). Such an exchange is cancelled
        and left to end whenever the connection does; while ABANDONED_LIMIT of them to
        one peer are still running, further requests to it fail at once. One that has
        not ended ABANDON_GRACE_S after it was cancelled says the connection is wedged:
        ``on_wedged`` is told (the host closes that connection)."""
        timeout = self.config.request_timeout if timeout is None else timeout
        if not self._running():
            raise NotRunning("requests need run() to be active")
        if self.scoreboard.is_banned(peer_id):
            raise PeerBanned(
                f"peer {peer_id} is banned for {self.scoreboard.ban_remaining(peer_id):.0f} s"
            )
        try:
            target = ID.from_base58(peer_id)
        except Exception as exc:
            raise BadRequest(f"not a peer id: {peer_id!r}") from exc
        nursery = self._nursery
        if nursery is None:  # not attached (a host driven by hand): run it here
            return await self._exchange(peer_id, target, protocol, payload, limit, timeout)
        if self._abandoned.get(peer_id, 0) >= ABANDONED_LIMIT:
            raise PeerUnreachable(
                f"{protocol} to {peer_id}: {ABANDONED_LIMIT} earlier requests are still "
                "stuck in its connection")
        answer: list[outcome.Outcome[bytes]] = []
        done = trio.Event()
        scope = trio.CancelScope()
        left = [False]

        async def exchange() -> None:
            try:
                with scope:
                    raw = await self._exchange(peer_id, target, protocol, payload, limit, timeout)
                    answer.append(outcome.Value(raw))
            except Exception as exc:
                answer.append(outcome.Error(exc))
            finally:
                done.set()
                if left[0]:
                    self._forget_abandoned(peer_id)

        nursery.start_soon(exchange)
        try:
            with trio.move_on_after(timeout + ABANDON_GRACE_S):
                await done.wait()
        finally:
            if not done.is_set():  # our deadline passed, or our caller's did
                scope.cancel()
                left[0] = True
                self._abandoned[peer_id] = self._abandoned.get(peer_id, 0) + 1
                nursery.start_soon(self._watch_abandoned, peer_id, done)
        if not answer and done.is_set():  # cancelled from outside: the host stopped
            raise NotRunning("the host stopped during the request")
        if not answer:
            logger.warning("%s to %s: the exchange did not end %.1f s after its %.1f s "
                           "timeout (wedged connection?); left behind", protocol, peer_id,
                           ABANDON_GRACE_S, timeout)
            raise RequestTimeout(f"{protocol} to {peer_id}: no answer in {timeout} s "
                                 "(the exchange would not end)")
        return answer[0].unwrap()

    async def _watch_abandoned(self, peer_id: str, done: trio.Event) -> None:
        with trio.move_on_after(ABANDON_GRACE_S):
            await done.wait()
        if not done.is_set() and self._on_wedged is not None:
            await self._on_wedged(peer_id)

    def _forget_abandoned(self, peer_id: str) -> None:
        remaining = self._abandoned.get(peer_id, 1) - 1
        if remaining > 0:
            self._abandoned[peer_id] = remaining
        else:
            self._abandoned.pop(peer_id, None)

    async def _exchange(
        self, peer_id: str, target: ID, protocol: TProtocol, payload: bytes, limit: int,
        timeout: float,
    ) -> bytes:
        stream: INetStream | None = None
        try:
            with trio.fail_after(timeout):
                try:
                    stream = await self._host.new_stream(target, [protocol])
                except Exception as exc:  # dial and negotiation failures vary
                    raise PeerUnreachable(f"cannot open {protocol} to {peer_id}: {exc}") from exc
                try:
                    await reqresp.write_frame(stream, payload)
                    raw = await reqresp.read_frame(stream, limit)
                except MessageTooLarge as exc:
                    self._penalise(peer_id, Misbehaviour.BAD_RESPONSE)
                    raise BadResponse(f"response over {limit} bytes") from exc
                except Exception as exc:  # reset, EOF, closed connection
                    raise PeerUnreachable(
                        f"{protocol} exchange with {peer_id} failed: {exc}"
                    ) from exc
        except trio.TooSlowError as exc:
            if stream is not None:
                await reset(stream)
            raise RequestTimeout(
                f"{protocol} to {peer_id}: no answer in {timeout} s"
            ) from exc
        except RequestError:
            if stream is not None:
                await reset(stream)
            raise
        await close(stream)
        return raw

    def _decode_or_penalise(self, peer_id: str, decode: Callable[[bytes], _T], raw: bytes) -> _T:
        try:
            return decode(raw)
        except RemoteError:
            raise
        except BadResponse:
            self._penalise(peer_id, Misbehaviour.BAD_RESPONSE)
            raise
