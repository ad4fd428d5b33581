from eth.rlp.logs import Log
from eth.rlp.receipts import Receipt
from eth.vm.forks.cancun.receipts import CancunReceiptBuilder
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from tests.harness import LocalChain, Module
from vm.execute import encode_receipt, receipt_status
from vm.modules import addresses
from vm.supply import get_supply


def test_transfer_and_fees_accounting():
    chain = LocalChain()
    (a0, k0), (a1, _) = chain.accounts[:2]
    before0 = chain.state().get_balance(a0)
    before1 = chain.state().get_balance(a1)
    receipt = chain.transact(k0, a1, value=123)
    assert receipt_status(receipt) == 1
    s = chain.state()
    assert s.get_balance(a1) == before1 + 123
    fee = before0 - 123 - s.get_balance(a0)
    assert fee == 21_000 * (chain.head.base_fee_per_gas + 10**9)
    supply = get_supply(s)
    assert supply["burned_fees"] == 21_000 * chain.head.base_fee_per_gas
    assert supply["total"] == supply["genesis"] - supply["burned_fees"]


def test_params_module_answers_eth_call():
    chain = LocalChain(params={"epoch_length_blocks": 20})
    params = Module(chain, "params", addresses.PARAMS)
    assert params.call("getParam", "epoch_length_blocks") == 20
    names, values = params.call("getParams")
    assert dict(zip(names, values, strict=True))["h3_resolution"] == 8


def test_system_accounts_survive_eip161():
    chain = LocalChain()
    _, k0 = chain.accounts[0]
    chain.transact(k0, addresses.PARAMS, data=b"", value=0)  # touch the account
    assert chain.state().get_nonce(addresses.PARAMS) == 1
    assert Module(chain, "params", addresses.PARAMS).call("getParam", "h3_resolution") == 8


def test_epoch_clock_advances():
    from vm.epoch import get_epoch

    chain = LocalChain(params={"epoch_length_blocks": 10})
    chain.advance(10)
    assert get_epoch(chain.state()) == 0
    chain.advance(1)  # height 11 starts epoch 1
    assert get_epoch(chain.state()) == 1
    assert chain.results[-1].epoch_boundary


def test_dev_account_zero_is_hardhat_account():
    chain = LocalChain()
    assert Account.from_key(chain.accounts[0][1]).address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


_LOGS = st.lists(st.builds(
    Log, st.binary(min_size=20, max_size=20), st.lists(st.integers(0, 2**256 - 1), max_size=4),
    st.binary(max_size=200)), max_size=4)


@given(status=st.sampled_from([b"", b"\x01"]), gas=st.integers(0, 2**64), bloom=st.integers(0, 2**2048 - 1),
       logs=_LOGS, type_id=st.sampled_from([None, 1, 2]))
def test_receipt_encoding_matches_py_evm(status, gas, bloom, logs, type_id):
    receipt = Receipt(state_root=status, gas_used=gas, logs=logs, bloom=bloom)
    if type_id is not None:
        receipt = CancunReceiptBuilder.typed_receipt_class(type_id, receipt)
    assert encode_receipt(receipt) == receipt.encode()


def test_oversized_initcode_is_an_invalid_transaction_not_a_crash():
    """EIP-3860: a creation with more than 49,152 bytes of initcode is invalid. py-evm
    raises OutOfGas out of apply_transaction for it, after taking the fee and bumping
    the nonce: that escaped block building and stopped the node."""
    import pytest

    from vm.errors import InvalidBlock, InvalidTransaction
    from vm.execute import MAX_INITCODE_SIZE, apply_transaction
    from vm.state import decode_transaction

    chain, twin = LocalChain(), LocalChain()
    (a0, k0), (a1, k1) = chain.accounts[:2]
    big = chain.sign(k0, None, b"\x00" * (MAX_INITCODE_SIZE + 1), gas=2_000_000)
    transfer = chain.sign(k1, a0, value=1)
    with pytest.raises(InvalidBlock, match="initcode_too_large"):
        chain.block([big])  # a block that carries it is refused
    built = chain.block([big, transfer], skip_invalid=True)  # a builder leaves it out
    assert [t.hash for t in built.transactions] == [decode_transaction(transfer).hash]
    assert built.state_root == twin.block([transfer]).state_root
    # py-evm's own refusal after the fee was taken leaves the state as it was
    state = chain.state()
    before = (state.get_nonce(a0), state.get_balance(a0))
    with pytest.raises(InvalidTransaction):
        apply_transaction(state, decode_transaction(chain.sign(k0, None, b"\x00" * 50_000, gas=2_000_000)), 0)
    assert (state.get_nonce(a0), state.get_balance(a0)) == before
