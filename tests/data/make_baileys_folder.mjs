// How tests/data/baileys-7.0.0-rc14 was written, with Baileys' own code: initAuthCreds, the
// pairing handler (configureSuccessfulPairing) fed a pair-success stanza that this
// script signs as the phone would, pre-keys and an app-state key through the folder's
// key store. Throwaway keys, never linked to a real account. To write it again:
//   npm install baileys@7.0.0-rc14 && node make_baileys_folder.mjs DIR
import {
	Curve, WAProto as proto, configureSuccessfulPairing, getNextPreKeys, hmacSign,
	useMultiFileAuthState, WA_ADV_ACCOUNT_SIG_PREFIX
} from 'baileys'

const folder = process.argv[2]
const { state, saveCreds } = await useMultiFileAuthState(folder)
const creds = state.creds

// The phone: its identity key signs the new device's identity key.
const phone = Curve.generateKeyPair()
const details = proto.ADVDeviceIdentity.encode({ rawId: 1234, timestamp: 1760000000, keyIndex: 3 }).finish()
const accountSignature = Curve.sign(phone.private,
	Buffer.concat([WA_ADV_ACCOUNT_SIG_PREFIX, details, creds.signedIdentityKey.public]))
const signed = proto.ADVSignedDeviceIdentity.encode({ details, accountSignatureKey: phone.public, accountSignature }).finish()
const container = proto.ADVSignedDeviceIdentityHMAC.encode({
	details: signed, hmac: hmacSign(signed, Buffer.from(creds.advSecretKey, 'base64'))
}).finish()
const stanza = { tag: 'iq', attrs: { id: '1' }, content: [{ tag: 'pair-success', attrs: {}, content: [
	{ tag: 'device-identity', attrs: {}, content: container },
	{ tag: 'platform', attrs: { name: 'smba' } },
	{ tag: 'device', attrs: { jid: '15550009999:21@s.whatsapp.net', lid: '98765432109876:21@lid' } }
] }] }
const { creds: update } = configureSuccessfulPairing(stanza, creds)
Object.assign(creds, update, { me: { ...update.me, name: 'Baileys Bot' } })

// What a connected socket does next: upload pre-keys, receive an app-state key share.
const { update: preKeyUpdate } = await getNextPreKeys(state, 5)
Object.assign(creds, preKeyUpdate)
const keyData = proto.Message.AppStateSyncKeyData.decode(proto.Message.AppStateSyncKeyData.encode({
	keyData: Buffer.alloc(32, 7), fingerprint: { rawId: 99, currentIndex: 2, deviceIndexes: [0, 21] }, timestamp: 1760000000123
}).finish())
await state.keys.set({ 'app-state-sync-key': { 'AAAAAEA/': keyData } })
await saveCreds()
