// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Clones} from "@openzeppelin/contracts/proxy/Clones.sol";

/// EIP-1167 minimal proxies of one implementation.
contract CloneFactory {
    address public immutable implementation;

    event Cloned(address indexed clone);

    constructor(address impl) {
        implementation = impl;
    }

    function clone() external returns (address c) {
        c = Clones.clone(implementation);
        emit Cloned(c);
    }
}
