// Stable journal MESSAGE_IDs, one per kind of event an administrator may want
// to find or alert on (`journalctl MESSAGE_ID=…`). They are part of chatd's
// interface: never change one, only add. The README lists them.

import Logging

public enum MessageID {
    public static let started: Logger.MetadataValue = "6a9d38fa05584167ad99729a3d32d3bd"
    public static let registered: Logger.MetadataValue = "9087fbe303834dc0b5dcf7d797fed52c"
    public static let renamed: Logger.MetadataValue = "e18b5a519ca54dfab6beb68e15e4c5ac"
    public static let snapshotWritten: Logger.MetadataValue = "5b88f024490d4c34a3114b93046e5c36"
    public static let snapshotFailed: Logger.MetadataValue = "ce149d2b53ea4f7096081b43e6ac0e5a"
    public static let reloaded: Logger.MetadataValue = "47ffa336124c4f56900bc0f561b1643b"
    public static let reloadRefused: Logger.MetadataValue = "3ca392d551fd4dd08f70fb4bee08bef9"
    public static let stopping: Logger.MetadataValue = "b6f81f898d5648c0b761c33144e0c3f0"
    public static let memberJoined: Logger.MetadataValue = "d68547e74dd04997ab8bc9ed3c075420"
    public static let memberLeft: Logger.MetadataValue = "0fbfda87989146b985b26c31102e98bf"
    public static let messageAccepted: Logger.MetadataValue = "615c7cfd820d414b80bdd60d204457d2"
    public static let removed: Logger.MetadataValue = "04e840a1924443c0889f44f461290088"
}


