from eth_account import Account

from tests.harness import LocalChain, Module
from vm.execute import receipt_status
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
