"""The two WhatsApp protobuf messages an import reads or writes, declared as whatsmeow's
own definitions declare them (proto/waAdv/WAAdv.proto, proto/waE2E/WAWebProtobufsE2E.proto):

- ADVDeviceIdentity, the details the phone signs when it links a device (read: a hosted
  device's account signature uses another prefix);
- AppStateSyncKeyFingerprint, which whatsmeow stores marshalled beside each app-state key
  (written: Baileys keeps it as a JSON object).

Declared here rather than imported from neonize's generated modules: importing those
loads neonize's package, and with it the Go library, into wactl.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

_FILE = """
name: "wa_import.proto" package: "wa_import" syntax: "proto2"
enum_type { name: "ADVEncryptionType" value { name: "E2EE" number: 0 } value { name: "HOSTED" number: 1 } }
message_type {
  name: "ADVDeviceIdentity"
  field { name: "rawID" number: 1 label: LABEL_OPTIONAL type: TYPE_UINT32 }
  field { name: "timestamp" number: 2 label: LABEL_OPTIONAL type: TYPE_UINT64 }
  field { name: "keyIndex" number: 3 label: LABEL_OPTIONAL type: TYPE_UINT32 }
  field { name: "accountType" number: 4 label: LABEL_OPTIONAL type: TYPE_ENUM type_name: ".wa_import.ADVEncryptionType" }
  field { name: "deviceType" number: 5 label: LABEL_OPTIONAL type: TYPE_ENUM type_name: ".wa_import.ADVEncryptionType" }
}
message_type {
  name: "AppStateSyncKeyFingerprint"
  field { name: "rawID" number: 1 label: LABEL_OPTIONAL type: TYPE_UINT32 }
  field { name: "currentIndex" number: 2 label: LABEL_OPTIONAL type: TYPE_UINT32 }
  field { name: "deviceIndexes" number: 3 label: LABEL_REPEATED type: TYPE_UINT32 options { packed: true } }
}
"""

HOSTED = 1  # ADVEncryptionType.HOSTED

_pool = descriptor_pool.DescriptorPool()
_pool.Add(text_format.Parse(_FILE, descriptor_pb2.FileDescriptorProto()))
ADVDeviceIdentity = message_factory.GetMessageClass(_pool.FindMessageTypeByName("wa_import.ADVDeviceIdentity"))
AppStateSyncKeyFingerprint = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName("wa_import.AppStateSyncKeyFingerprint")
)
