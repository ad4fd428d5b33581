// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// The smallest useful contract: one slot, one event. Also the implementation the
/// clone factory copies (a clone starts with value 0: no constructor runs).
contract Minimal {
    uint256 public value; // slot 0

    event Set(address indexed who, uint256 value);

    function set(uint256 v) external {
        value = v;
        emit Set(msg.sender, v);
    }
}

/// A constructor taking an argument of any size (the conformance suite passes 1 KB).
contract Payload {
    bytes32 public digest;
    uint256 public size;

    constructor(bytes memory data) {
        digest = keccak256(data);
        size = data.length;
    }
}
