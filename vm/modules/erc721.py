"""What every ERC-721 collection of the chain shares (vehicles, developer licenses): the
ERC-165 interface ids and the safe-transfer receiver check."""

from __future__ import annotations

import eth_abi
from eth.constants import STACK_DEPTH_LIMIT
from eth_typing import Address

from vm.modules.base import ERROR_SELECTOR, Call, ModuleRevert

INTERFACE_ERC165 = bytes.fromhex("01ffc9a7")
INTERFACE_ERC721 = bytes.fromhex("80ac58cd")
INTERFACE_ERC721_METADATA = bytes.fromhex("5b5e139f")
ERC721_RECEIVED = bytes.fromhex("150b7a02")  # onERC721Received(address,address,uint256,bytes)
G_COLD_ACCOUNT = 2_600  # EIP-2929 cost of reaching a receiver contract, as CALL pays
G_WARM_ACCOUNT = 100


def error_reason(output: bytes) -> str | None:
    if output[:4] != ERROR_SELECTOR:
        return None
    try:
        return eth_abi.decode(["string"], output[4:])[0]
    except Exception:
        return None


def check_erc721_receiver(call: Call, from_: bytes, to: bytes, token_id: int, data: bytes) -> None:
    """ERC-721 safe transfer: a receiver with code must answer onERC721Received with its
    selector. Runs after the transfer's writes (checks-effects-interactions), as a real
    EVM child call from the calling module's address, so a refusal rolls everything back.
    Shared by the chain's ERC-721 collections (vehicles, licenses)."""
    receiver = Address(to)
    code = call.state.get_code(receiver)
    if not code:
        return  # externally owned accounts (and code-less system modules) accept tokens
    comp = call.computation
    cold = not call.state.is_address_warm(receiver)
    if cold:
        call.state.mark_address_warm(receiver)
    call.gas(G_COLD_ACCOUNT if cold else G_WARM_ACCOUNT, "receiver account access")
    if comp.msg.depth + 1 > STACK_DEPTH_LIMIT:
        raise ModuleRevert("call depth exceeded")
    calldata = ERC721_RECEIVED + eth_abi.encode(
        ["address", "address", "uint256", "bytes"],
        [call.sender, from_, token_id, bytes(data)],
    )
    remaining = comp.get_gas_remaining()
    child_gas = remaining - remaining // 64  # EIP-150: keep a 64th to finish this call
    comp.consume_gas(child_gas, "onERC721Received")
    message = comp.prepare_child_message(
        gas=child_gas,
        to=receiver,
        value=0,
        data=calldata,
        code=code,
        is_static=comp.msg.is_static,
    )
    child = comp.apply_child_computation(message)
    if child.should_return_gas:
        comp.return_gas(child.get_gas_remaining())
    default = "transfer to non ERC721Receiver implementer"
    out = bytes(child.output)
    if child.is_error:
        raise ModuleRevert(error_reason(out) or default)
    if len(out) < 32 or out[:4] != ERC721_RECEIVED or any(out[4:32]):
        raise ModuleRevert(default)
