// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// Each kind of revert a client must decode: Error(string), Panic(uint256), a custom error.
contract Reverter {
    error Unauthorized(address who, uint256 code);

    function failString() external pure {
        revert("reverter: plain reason");
    }

    /// Panic(0x12): division by zero.
    function failPanic(uint256 d) external pure returns (uint256) {
        return 100 / d;
    }

    function failCustom() external view {
        revert Unauthorized(msg.sender, 42);
    }

    /// Reverts in a transaction too (for estimates and receipts of failed sends).
    function mustBePositive(uint256 x) external pure returns (uint256) {
        require(x > 0, "reverter: x must be positive");
        return x;
    }
}
