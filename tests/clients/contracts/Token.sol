// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// OpenZeppelin's ERC-20, the token every dapp tutorial deploys.
contract Token is ERC20 {
    constructor(uint256 supply) ERC20("Motus Conformance", "MCT") {
        _mint(msg.sender, supply);
    }
}
