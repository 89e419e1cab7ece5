"""AdderBoard submission: Math LLM checkpoints/adder_shapes/l2_w8/seed-1, 1,592 unique parameters, exported from checkpoints/adder_shapes/l2_w8/seed-1/best_model.pt (step 15392) by Math LLM's scripts/export_adderboard.py.

    python verify.py adder_shapes_l2_w8_seed-1.py   # AdderBoard's own check
"""

import sys
import types

import torch

# The code of every AdderBoard submission that scripts/export_adderboard.py writes (adderboard.write_submission):
# the export puts the model's constants where the marker below is. Nothing here knows addition: the model is built
# from Math LLM's own model code, decoding is plain greedy decoding, and the only task-specific code writes a and b
# in the model's data format and reads its answer back.

METADATA = {'name': 'Math LLM checkpoints/adder_shapes/l2_w8/seed-1',
 'author': 'Math LLM',
 'params': 1592,
 'architecture': '2 layers, width 8, 2 heads of 4, feed-forward 16 (gelu), layernorm, learned positions',
 'tricks': ['learned absolute positions',
            'tied embeddings',
            'data format padded-reversed-all: 21+70=910 (padded, operands and answer reversed)',
            "trained from random initialisation by Math LLM's generic train.py (AdamW), greedy decoding"]}
MODEL_CONFIG = {'model_size': 'tiny',
 'num_layers': 2,
 'hidden_size': 8,
 'num_heads': 2,
 'ffn_size': 16,
 'head_dim': None,
 'norm': 'layernorm',
 'mlp': 'gelu',
 'bias': True,
 'tie_embeddings': True,
 'rank': None,
 'max_length': 34,
 'dropout': 0.0,
 'pos_encoding': 'learned',
 'digit_positions': 128,
 'place_bias': True,
 'vocab_size': 13,
 'digit_ids': (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
 'answer_start_id': 11,
 'sign_id': -1}
VOCAB = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '+', '=', '<end>']
PADDING, OPERAND_WIDTH = 'width', 10
REVERSE_OPERANDS, REVERSE_ANSWER = True, True
WEIGHTS = {
    'token_embedding.weight': ([13, 8], [-0.43231934, 0.035226382, 0.39272764, -0.03337165, -0.1127473, 0.5875596, 0.18331547, -1.0208647, 0.5256303, -0.22970939, 0.065488435, -0.19626543, -0.07700272, 0.42239887, 0.17533286, -1.0817646, 1.2057644, -0.16384798, 0.09908531, -0.056812026, 0.15458883, 0.28982928, 0.10783468, -0.5216561, 1.4055135, -0.15898584, 0.068464294, -0.030096605, 0.2325996, -0.07347632, -0.1810136, 0.22576506, 1.0387154, -0.15296113, 0.038163185, -0.063129775, 0.19298702, -0.47331488, -0.5032498, 0.97411555, 0.23132245, -0.08143205, 0.06828522, -0.05104233, 0.12825334, -0.6535432, -0.6055182, 1.4632564, -0.75958496, -0.011932191, 0.07434231, -0.036014985, 0.035832103, -0.5997571, -0.4165971, 1.4737439, -1.4440106, 0.035568688, 0.052844297, -0.016191412, -0.042015295, -0.34478822, -0.00015842213, 1.0278994, -1.6287282, -0.041889265, -0.073420875, -0.053420313, -0.13673787, -0.046196006, 0.47162858, 0.33470702, -1.2528362, -0.22210827, -0.26161245, -0.13421825, -0.2273085, 0.24724324, 0.82251436, -0.39842722, 0.08813919, 1.6532695, -0.93925536, 0.14819603, 0.73586756, -1.6510178, 0.18909252, -0.57805634, -0.49923795, 1.3107568, 0.055973843, 0.50416434, 2.0101638, -1.9853302, -0.008322897, -0.8493723, 0.26303622, 6.1256294, -2.362463, -1.3185762, 0.073981375, -1.9407248, 1.0837413, -0.3268829]),
    'position_embedding.weight': ([34, 8], [0.21947417, -0.7339982, 0.35365117, 0.0409403, -0.4526481, 0.5922141, -0.14748888, 0.45676035, 0.21779536, -0.08491063, 0.20974912, 0.6550173, -1.303753, -0.19756995, 0.19954385, -0.026705328, 0.16373317, -0.49457532, -0.27222654, 1.9413933, 0.3575115, -0.19870125, -0.053074647, -0.28741103, -0.011513185, -1.0435735, -0.10818494, 0.9857603, 1.2318317, 0.19555025, -0.11837348, -0.20026363, -0.044108722, -0.7518794, 0.030871311, -0.37379158, 1.631904, 0.44495773, 0.002261044, -0.07200663, -0.012310506, -0.052114267, 0.017143087, -1.4941201, 1.1770754, 0.3908356, 0.115894504, -0.040501628, 0.081063755, 0.65284806, -0.17162018, -1.7655268, 0.29184797, 0.13941677, 0.13890599, -0.08891961, 0.2375944, 1.0794506, -0.3103879, -1.0841858, -0.509527, -0.11659298, 0.17128572, -0.12088825, 0.37135923, 1.1340584, -0.4420156, 0.20864801, -0.83091635, -0.32475215, 0.15938416, -0.17437586, 0.36513495, 0.75253505, -0.56879747, 1.6519012, -0.3770789, -0.4089244, 0.04876353, -0.2685594, 0.028414989, -0.4496201, 0.68429077, 0.86264515, -0.28016344, -0.30634862, -0.4168874, -0.80480385, 0.20255029, -0.8897223, 0.7559238, 0.02975721, -0.27233538, -0.011363864, 0.29413304, 0.25056547, 0.19032858, -0.20962693, 0.20727777, 0.7001479, -1.1859152, -0.19674747, 0.20920569, -0.028333532, 0.14728443, -0.5950091, -0.32258636, 1.960535, 0.3745857, -0.12028606, -0.061429124, -0.2813969, 0.00022579668, -1.1098206, -0.11696518, 1.0219085, 1.2843322, 0.23341796, -0.12065459, -0.17824133, -0.054721255, -0.8291993, 0.008932954, -0.37022087, 1.6841371, 0.45189196, -0.033917043, -0.07551904, -0.025447872, -0.124303974, 0.0016060506, -1.510126, 1.2385508, 0.38918477, 0.08658334, -0.05796919, 0.07031747, 0.63489324, -0.13233994, -1.7938772, 0.36938217, 0.11603076, 0.163008, -0.107960165, 0.2257023, 1.1022668, -0.26839423, -1.0934663, -0.47847098, -0.1624953, 0.19413826, -0.1289128, 0.31750408, 1.1028041, -0.47020274, 0.1620464, -0.8740008, -0.40404904, 0.115321785, -0.23170967, 0.35652074, 0.76070017, -0.54128957, 1.6485128, -0.3668936, -0.43487287, 0.057373673, -0.27502167, -1.0340734, -0.41848147, 0.28090385, 1.2108953, 1.4880568, -1.4513844, -0.39193565, -1.1327939, -0.3207052, 0.92815775, 0.3778642, 0.3061303, 1.3023497, -1.6515936, -1.193919, -1.4880584, 0.019023836, 0.17218013, 0.6408229, -0.75989825, 0.067158155, -0.65732735, 0.059805773, -0.13370284, -0.015438983, -0.26207858, 0.8083554, -0.40620685, 0.41560918, -0.70103586, 0.0794401, -0.13745454, -0.11901534, -0.70593387, 0.5899413, -0.011076594, 0.32176805, -0.3882669, -0.16182831, -0.12793058, -0.12357611, -0.71722853, 0.23036067, 0.4622923, 0.11209339, 0.10124324, -0.46994805, -0.044508703, -0.09564516, -0.3846601, -0.11074322, 0.6231548, -0.1487377, 0.4237166, -0.7574816, 0.0016180051, -0.02765235, 0.08191544, -0.24570782, 0.48268217, -0.35939142, 0.5258411, -0.84860367, 0.041540507, 0.025390757, 0.45943135, -0.2278191, 0.049807176, -0.5211614, 0.30903918, -0.7689315, -0.022733394, 0.15576224, 0.8388859, 0.14887257, -0.4385513, -0.29155067, 0.0037762364, -0.35947216, 0.059250347, 3.4007802, 0.79591805, -1.429605, -4.696262, 3.2356005, 1.286201, -1.207912, -1.6713219, 3.4506373, 2.3755965, 1.0250381, -4.6441717, -1.3773009, -1.9547975, 2.2141826, -0.5349375, -2.9268656e-05, 0.0093104765, -0.015368155, 0.00064448855, -0.007576922, 0.0023140493, 0.008118776, -0.0031052995]),
    'blocks.0.ln_attention.weight': ([8], [0.15247473, 0.9306326, 0.83494467, 0.9007773, 1.0677491, 0.44708258, 0.44202983, 0.22817104]),
    'blocks.0.ln_attention.bias': ([8], [-0.00083457486, 0.16387476, -0.11950821, -0.133266, -0.099582195, 0.010426936, -0.044107407, 0.058095034]),
    'blocks.0.attention.qkv.weight': ([24, 8], [-0.08280937, -0.1655738, 0.1632306, -0.27945992, -0.0689691, 0.093644574, -0.3657605, 0.4741949, -0.045331288, 0.21306881, 0.07210192, 0.6675277, -0.1462494, -0.041591894, 0.026948553, -0.56872916, -0.122939855, -0.57593185, 0.31183577, 0.2016315, 0.40600544, 0.10566503, 0.0035831055, -0.0019070958, 0.33133745, 0.37210202, -0.3554454, -0.3687549, -0.33339489, -0.06674843, -0.12669502, 0.14227271, 0.09382783, -0.7100809, 0.34167194, -0.4426645, -0.7748692, 1.0264878, -0.14120533, 0.74282765, -0.23207524, 0.19131199, 0.07157388, -0.393146, -0.33847645, 0.7743171, -0.061411448, 0.54507875, -0.2456798, 0.41038162, 0.21887426, -0.7024655, 0.8420357, 0.27855307, -0.30319455, -0.34286886, -0.21504791, 1.0064819, -1.0041201, -0.16105327, 0.5082387, 0.7426583, -1.190716, -0.10135287, -0.098136134, 0.103881545, -0.26787558, -0.0019369144, 0.2744945, 0.58321214, -0.77941555, -0.2598586, 0.5881806, 0.3006401, -0.040037453, 0.07828718, -0.5826041, -0.26106673, -0.1299487, 0.012660656, -0.31361485, -0.34506562, 0.080835596, 0.35435495, 0.1695823, -0.077285655, -0.06591148, -0.14728378, -0.0036238406, 0.22748142, 0.07145621, -0.24991412, 0.13776264, -0.023756335, -0.08864389, -0.07138265, 0.26833963, -0.75279117, 0.7158232, -0.67858845, -0.13875629, -0.15629359, -0.052849893, 0.49634197, -0.53143126, 0.06729424, 0.41342658, -0.5304104, -0.3716694, 0.71442425, 0.0728328, 0.12344591, 0.35232568, 0.19882165, -0.22231701, 0.06551206, 0.7558369, 0.32780978, -0.69734865, -0.52203375, 0.25280797, 1.3283085, -1.6497184, -0.0066392296, -0.27537513, 0.35314405, -0.68628633, -0.2554591, -0.38284728, -0.28036085, -0.026843522, 0.12883337, 0.17534803, 0.08159533, 0.039920676, 0.241339, -0.12610023, 0.12108267, -0.015785143, -0.3229532, 0.034305867, -0.036917113, 0.12069247, 0.17166753, 0.05455318, -0.12963907, 0.0780457, -0.1486375, 0.010583862, 0.38501215, -0.14494887, 0.006885657, -0.018012447, 0.011536429, 0.1263836, -0.030777583, 0.0037188395, 0.08622465, -0.14140041, 0.036324136, 0.17032708, 0.027802108, -0.079560004, 0.026128095, -0.023475446, 0.113260254, -0.039248526, -0.10922447, -0.13530137, -0.023653254, 0.07838509, 0.0064430656, 0.027400076, -0.10444191, 0.16511436, -0.0537536, -0.14502047, 0.05679603, -0.012336019, 0.043710295, 0.026200932, 0.23561327, -0.13969149, -0.048479255, -0.3001838, 0.0390573, -0.33898354, 0.03490384, -0.0313175, -0.35255986, 0.45153618, 0.26626593]),
    'blocks.0.attention.qkv.bias': ([24], [-0.31959856, -0.09117992, -0.0094938325, 0.04139784, 0.37434268, -0.4125601, 0.400214, -0.38942835, -0.002052701, -0.014441201, 0.007663512, -0.013712264, -0.028456228, 0.00520939, 0.0020682327, -0.0075037396, -0.05188446, 0.04691656, -0.0064664995, -0.012671732, 0.015255166, -0.008549122, 0.014516448, 0.045807824]),
    'blocks.0.attention.proj.weight': ([8, 8], [-0.05476614, 0.009606835, -0.10889251, -0.051452894, 0.012633142, 0.12160238, 0.09151944, -0.039508354, -0.38694173, 0.39408648, -0.15754317, -0.025516303, 0.113241516, -0.07387117, 0.065444894, 0.029478077, 0.06049615, 0.052916795, 0.108304776, 0.05301344, -0.0599405, 0.047783833, -0.033956997, -0.12585595, -0.001334272, -0.29194385, -0.078279346, -0.0058989082, -0.020238074, 0.02962913, 0.07649559, 0.09659571, 0.51511395, -0.13730074, -0.007877618, 0.029756607, -0.07360923, 0.0054423544, -0.07039198, -0.4344529, 0.024115015, -0.15465705, -0.05785761, 0.03797408, -0.02657122, 0.06973907, -0.0589399, 0.13026865, 0.008461363, 0.00425371, 0.1530588, 0.0760872, 0.004670598, -0.06310274, 0.07288431, 0.19937326, 0.045467697, -0.033459872, -0.13023937, -0.050569944, 0.08107982, 0.010317562, -0.00021357334, -0.09948826]),
    'blocks.0.attention.proj.bias': ([8], [0.088912115, -0.08375138, 0.09560405, -0.04307978, -0.23389198, -0.046877213, -0.08244131, 0.3256512]),
    'blocks.0.ln_mlp.weight': ([8], [1.3437977, 0.5038694, 0.98184407, 0.16028681, 0.42824474, 0.7942299, 1.3837166, 1.018878]),
    'blocks.0.ln_mlp.bias': ([8], [-0.056729, 0.09522872, -0.21303385, 0.001617594, -0.060141575, 0.014548663, 0.2532742, -0.0842689]),
    'blocks.0.mlp.0.weight': ([16, 8], [0.39038292, -0.0447605, -0.10882855, -0.2178986, 0.18163592, -0.14841393, -0.15810691, -0.019411424, 0.05612835, 0.33529916, -0.12198645, -0.7949089, 0.6489618, -0.19524822, -0.046259627, 0.12896742, 0.037833564, -0.029883262, -0.07331171, -0.07431702, 0.35490853, -0.25235164, 0.16280742, -0.15433662, 0.0885531, -0.113492936, -0.3273073, -0.00990181, 0.06816727, 0.03489712, 0.44756, -0.21864788, 0.047771487, 0.26906875, 0.5784898, -0.0073201964, -0.006370992, -0.03896087, -0.42647317, -0.25284004, -0.021937383, 0.22016886, 0.743029, -0.34265417, -0.15988652, 0.106592335, -0.63816845, -0.046530716, 0.003346453, 0.009831893, -0.0053168437, -0.0041682124, 0.0075101876, -0.0017116793, -0.0013510549, -0.009902842, -0.2167386, 0.3669406, -0.33438516, -0.25315383, 0.5763739, -0.28141043, -0.11065765, -0.19836229, -0.12483729, 0.027454654, 0.14483595, -0.14310795, 0.06456869, -0.26611033, -0.36806905, 0.3386362, -0.31403238, 0.12505335, 0.05313841, 0.06939993, -0.10537703, 0.16960761, 0.2624958, -0.29391253, 0.27081943, 0.04995262, 0.1035975, -0.08063657, 0.22532667, -0.32508004, -0.46195036, 0.17815104, -0.5314865, 0.23427744, 0.22643982, 0.18565, -0.11418133, -0.16347486, -0.17463508, 0.16873743, -0.035259575, 0.22881258, 0.11475746, 0.05052471, -0.07480499, -0.24640144, -0.29746324, 0.2234644, 0.37248167, 0.13081281, 0.07738827, -0.25939456, 0.26972014, -0.078912385, -0.2754595, -0.31811738, -0.012551784, -0.01237429, -0.032153167, -0.0696896, 0.08588847, -0.12451704, 0.0412, 0.009357133, 0.105086006, -0.046093173, -0.41929322, -0.09156927, -0.25895056, 0.13664703, 0.16330212, 0.34536767]),
    'blocks.0.mlp.0.bias': ([16], [-0.20722823, -0.2536881, -0.019965883, -0.14878151, -0.31112123, -0.5448377, -0.0035483227, -0.14394115, -0.0009150803, 0.012356168, -0.07154831, 0.03474508, -0.17189585, -0.3671852, 0.0010213638, -0.59050673]),
    'blocks.0.mlp.2.weight': ([8, 16], [-0.5015536, 0.018650252, -0.03859669, -0.31068084, -0.07986646, 0.1666241, 0.010289596, 0.2905426, 0.0703731, 0.37939903, -0.42224967, 0.7374543, 0.0115458695, -0.40754333, -0.00717687, -0.13525274, 0.11163739, -0.0628992, -0.12278296, 0.094886556, -0.06293675, -0.112897724, 0.0046858676, -0.15566067, -0.16787352, -0.11923288, 0.046536956, -0.11536786, 0.15451746, 0.0351089, -0.03457885, 0.18015704, 0.12846398, 0.077149265, -0.011428917, 0.08137294, -0.19165154, -0.2226949, 0.005765093, -0.021283707, -1.2017121e-05, 0.0075578005, 0.022903735, -0.099427834, 0.038753245, 0.1309185, -0.018061846, 0.037007727, 0.10452673, -0.33802736, -0.14017852, 0.000466443, -0.15138276, -0.13026491, -0.0016285572, -0.32691026, -0.03358022, -0.16932616, 0.012347766, -0.088944614, -0.055104226, -0.17318633, -0.09629102, 0.0524452, 0.054690376, -0.01652995, -0.1848652, 0.04845588, -0.034218285, 0.06784977, -0.00081625476, -0.23456037, 0.10168518, 0.049699612, -0.10083772, -0.008008762, -0.19946301, -0.016028926, 0.015066844, -0.16393244, 0.04144648, 0.15677069, 0.17006, -0.30622405, 0.035243787, -0.15238336, 0.008992272, 0.16893476, 0.3389155, -0.13406794, 0.31054303, 0.07921261, 0.23101604, 0.045870624, 0.0699476, 0.008581827, -0.01832808, 0.009824167, -0.073321305, -0.1293991, 0.35304293, 0.2815342, 0.005417346, -0.12000305, 0.24295315, -0.3896669, 0.29889396, 0.005220874, 0.19925943, -0.0048816735, -0.019315686, -0.067813985, 0.09735829, -0.051540412, 0.19704619, 0.3207674, 0.15215848, -0.008786435, 0.0024197276, 0.2307433, -0.5699448, 0.27236968, -0.44512317, -0.29448834, -0.39990672, 0.3129368, 0.003521918, -0.09273678]),
    'blocks.0.mlp.2.bias': ([8], [0.049057372, 0.12591255, 0.051741816, 0.093732946, 0.012852684, -0.10641173, -0.104049645, 0.076932415]),
    'blocks.1.ln_attention.weight': ([8], [1.6848334, 1.9134179, 1.9028538, 1.7196212, 1.5002205, 1.5895439, 1.9444546, 1.6780717]),
    'blocks.1.ln_attention.bias': ([8], [0.029000992, 0.3673977, -0.20192051, -0.117090374, -0.09064951, -0.14946729, 0.06588965, 0.06127397]),
    'blocks.1.attention.qkv.weight': ([24, 8], [-0.008741768, 0.7058927, -0.6355301, -0.32798412, -0.45538133, 0.5893557, -0.5869071, 0.14870928, 0.010296972, -0.40764078, 0.12207385, 0.21001016, 0.13348979, 0.009522464, -0.29603192, 0.13315685, 0.5897989, -0.39238903, -0.119706824, -0.34100473, -0.22920066, 0.30830204, 0.54838043, 0.12147592, 0.3364487, 0.41771412, 0.11093377, -0.8626463, -0.2300307, -0.26123938, 0.5764179, 0.2360348, -0.11234576, -0.43702042, 0.08475998, 0.36845723, -0.031268757, 0.2805268, -0.09410442, -0.23599301, 0.07439554, -0.59782076, 0.42545858, 0.12614493, 0.04912919, -0.10549866, 0.4473389, 0.10220332, 0.44268566, -0.028116163, 0.15037341, -0.6189227, -0.5086871, 0.25759378, 0.4200912, 0.22058108, -0.264872, -0.010395387, -0.27019334, 0.71862066, -0.3115366, 0.45253232, -0.17496017, -0.039543234, 0.1341896, 0.97848654, -0.14739099, -0.22655487, -0.7421793, -0.29679278, 0.08877415, 0.0069502983, -0.13076627, -0.0741408, -0.022147462, -0.8277126, 0.77360725, 0.18746778, -0.040890716, 0.09742783, -0.07967797, 0.37246817, -0.3536218, -0.044008106, 1.1305369, 0.042521466, -0.10059913, -0.08482251, 0.02638271, -0.1515857, -0.15474208, 1.4099268, -0.112052724, -0.15735738, -0.048630673, -0.07160746, -0.23199208, -0.25335065, -0.15219188, -0.22529946, 0.77354234, 0.47568837, -0.09467373, 0.12752031, -0.05733904, -1.0952657, -0.10455038, 0.48943064, 0.22594576, 0.61563545, -0.20445456, 0.07435542, 0.053051397, -0.119940884, 0.123166524, -0.17403898, -0.9044514, 0.32495824, 0.10835474, 0.37243375, -0.029589415, 0.15589702, -0.14151306, -0.88444895, 0.48601407, 0.27331313, -0.07314096, 0.11241134, -0.10130447, -0.021308253, -0.5212239, -0.013044396, -0.0111894235, -0.19814639, 0.51041, 0.83082473, -0.9798139, 0.09737128, -0.17124458, 0.045393765, -0.079332046, 0.37053406, 0.72600454, -0.0855976, -0.81330436, 0.07796426, 0.40639082, 0.01920401, 0.025851177, -0.09506242, -0.37073135, 0.87572455, -0.06921704, 0.04310453, 0.5143188, 0.046633836, -0.005815702, 0.2437141, -0.4998722, -0.7708949, 0.013693661, -0.044768587, -0.10667082, 0.19034664, -0.25992936, 0.33817872, -0.045233738, -0.09038643, -0.061174184, -0.13790408, -0.45134547, -0.159352, -0.018254647, 0.36012483, 0.25166008, 0.4496496, 0.08325485, 0.023008654, 0.16413616, -0.23024158, 0.12092652, 0.066463076, -0.17360356, -0.32491705, -0.17370918, 0.06097315, -0.13449962, 0.026275204, 0.07518017, -0.32288447, 0.40328032, 0.23114131]),
    'blocks.1.attention.qkv.bias': ([24], [0.38034505, 0.032918993, -0.1674275, -0.069614194, 0.030409249, -0.45017835, -0.76450646, 0.22243735, -1.1921483, 0.39781263, -0.0862342, 0.76065534, 0.2553805, 0.25368387, -0.042245183, 0.09832249, 0.11467641, -0.038306292, 0.046340335, -0.089511774, -0.2225349, 0.01798719, 0.14800589, 0.40076602]),
    'blocks.1.attention.proj.weight': ([8, 8], [-0.21460874, -0.050312463, -0.052398033, 0.14134924, -0.10462614, 0.042112783, 0.10242098, 0.04971144, -0.40568575, 0.3735602, 0.61931044, 0.5180238, 0.12034806, 0.42795658, 0.046497352, -0.29058573, 0.42426094, 0.26019213, 0.25848195, -0.34951398, -0.061223082, 0.04795082, -0.013595258, 0.17418306, 0.12196396, -1.2012811, -0.35203078, -0.27149653, 0.36304045, 0.014723495, -0.21684448, -0.40851754, 0.1527213, 0.612045, -0.64630073, -0.19150665, 0.045631535, 0.26643774, -0.05713276, -0.15137234, -0.2733939, 0.028862372, 0.12316824, 0.32273376, 0.00914439, -0.31259882, -0.1274144, 0.13511401, 0.41684553, 0.17618395, 0.54529536, -0.35797077, -0.028261786, -0.12228176, -0.011748253, 0.032580446, -0.5162694, -0.81296694, -0.15341324, 0.3916282, -0.3239319, -0.17274646, 0.42866716, -0.007925326]),
    'blocks.1.attention.proj.bias': ([8], [-0.15765357, -0.6470332, 0.5452697, -0.3798602, -0.4846651, -0.021942135, -0.686155, 0.36555654]),
    'blocks.1.ln_mlp.weight': ([8], [1.3839736, 1.79174, 2.528187, 2.4934168, 2.2060096, 2.1167796, 1.4792788, 2.1571865]),
    'blocks.1.ln_mlp.bias': ([8], [0.3760085, 0.22232442, 0.18217628, -0.84879905, 0.7446826, 0.32178634, -0.17087495, -0.29052928]),
    'blocks.1.mlp.0.weight': ([16, 8], [-0.7499764, -0.099827036, 0.15150219, 0.25262213, -0.42419568, -0.31503415, 0.50244427, 0.047975875, -0.5729363, -0.056140788, -0.016059985, 0.5146932, 0.59957385, -0.19893213, -0.23298362, -0.2949053, -0.25743383, 0.8298513, -2.5536005, 0.047895387, -0.62643474, 0.3535655, 0.41033593, 0.28902182, -1.4004503, 1.7559973, -1.03745, 1.3971305, 1.7565726, -0.77185684, -0.97906876, -1.4833652, -0.26431617, 0.21337819, -0.8479719, 0.036753017, -0.08638008, 0.28014368, -0.22656216, 0.2945878, -0.30016652, 0.12320855, -0.62211114, 0.12520657, -0.13282396, 0.48376426, -0.30144325, 0.45086727, 0.2156762, 0.24390434, 0.1078837, -0.71289676, -0.27800924, 0.15490784, 0.36392546, -0.14405718, 0.6142467, 0.37446165, 0.075667426, 0.26149952, 0.46311852, -1.0028963, 0.3720451, -0.7554194, -0.061246276, -0.40342844, -0.09032663, 0.6632788, -0.128383, -0.25549576, 0.10972181, 0.2628927, -0.08743602, 0.45556656, -1.325795, -0.11359955, 0.07531108, 0.43590435, -0.077792645, 0.1737152, -0.21642892, -0.6431612, 0.48252916, -0.21293718, 0.073029675, -0.10275536, 0.23936932, 0.21628582, 0.20850858, 0.4042, -0.037088446, -0.3235646, 0.41588378, 0.37881628, -0.3156579, -0.020907601, 0.19546126, 0.18798931, 0.11088422, -0.06513728, 0.077187985, -0.091464505, 0.5815584, -0.76254624, 0.24438065, 0.1980898, -1.1819124, -0.04021655, 0.07838618, 0.31271958, -0.017876405, 0.29723683, 0.346422, 0.075256385, -0.29423866, -0.03532956, -0.13658431, 0.7289906, -0.2715625, 0.40814415, -0.33589458, -0.15159842, 0.4519761, -0.11723193, 0.16898026, -0.39998665, 0.7157511, -0.875405]),
    'blocks.1.mlp.0.bias': ([16], [-0.5441526, -0.04892535, -1.0392271, -0.2557884, -0.008143853, 0.024246711, 0.29991204, -0.49678424, -0.38665712, -0.4756502, 0.11681058, 0.61580855, -0.1423713, -0.4523659, 0.48948216, 0.1400612]),
    'blocks.1.mlp.2.weight': ([8, 16], [0.51095676, 0.32188308, -1.5894952, 0.41347447, 1.5806079, 0.91809446, -0.52804446, -0.2901402, -0.32096896, -2.301597, 0.08936855, 0.663328, -0.390756, -0.2697559, -0.31223986, 0.3611962, -0.13383934, -0.34000292, 0.7154931, -0.4556038, -0.66355294, -0.09171423, -0.028102793, -0.035018135, 0.64323175, 1.984248, 0.3305147, 0.2125535, 0.09493172, 1.0616374, 0.20339628, -0.09654252, -0.2733056, -0.005150392, 0.7864418, 1.2575507, -0.13852271, 0.19762929, 0.20210779, 0.13492495, 0.17054836, 2.590791, -0.20992053, -0.16117485, -0.15164714, 0.40491712, -0.08152873, -0.46524924, -0.39775908, -0.5622193, 0.6218929, 0.028232776, -0.5698334, -0.21564114, 0.325536, 0.31365708, -0.21621801, 2.49173, 0.111247785, 0.6668314, 0.05359223, 0.6164363, 0.019350229, -0.23253311, 0.4713158, -0.63432807, 0.6686611, 0.6132691, -0.5292487, -0.18414168, 0.20412564, -0.06711221, 0.25528333, 2.4155562, -0.0282437, -0.2526005, 0.14224912, 0.4084744, 0.39995655, -0.30466262, -0.070046015, 0.18319431, -0.43842164, 0.36201048, 0.59026396, -0.590766, -0.0053827874, 0.56936693, 0.490006, 2.737928, 0.24632213, 0.74756503, -0.014765005, 1.4076561, -0.3889384, -0.3365744, -0.62320364, -0.011925341, -1.6038191, -0.026559, 1.319211, -0.916923, 0.087330185, 0.11737583, 0.41545212, 1.469602, 0.20963828, 0.77196383, -0.1302185, 0.90351856, 0.26539683, -0.52350295, -0.06779254, -0.1365003, 2.1045337, -0.6724441, -1.615655, -0.04618462, 0.26775044, -0.0545675, -0.20173927, -0.7418744, -0.46411422, -1.3815581, 0.4835903, -1.3755192, 0.45381418, 0.2881215]),
    'blocks.1.mlp.2.bias': ([8], [-0.28679633, 0.016937204, -0.117350996, -0.15294906, 0.94077134, 0.2866875, 0.43238172, -0.23148789]),
    'ln_final.weight': ([8], [22.456898, 1.8304108, 1.2320509, 6.3032813, 5.024397, 18.04144, 13.173527, 20.290426]),
    'ln_final.bias': ([8], [0.76835746, 0.9176183, -0.861704, 1.1710889, -0.33658755, 1.4764874, -0.46922934, -0.57947665]),
    'lm_head.weight': ([13, 8], [-0.43231934, 0.035226382, 0.39272764, -0.03337165, -0.1127473, 0.5875596, 0.18331547, -1.0208647, 0.5256303, -0.22970939, 0.065488435, -0.19626543, -0.07700272, 0.42239887, 0.17533286, -1.0817646, 1.2057644, -0.16384798, 0.09908531, -0.056812026, 0.15458883, 0.28982928, 0.10783468, -0.5216561, 1.4055135, -0.15898584, 0.068464294, -0.030096605, 0.2325996, -0.07347632, -0.1810136, 0.22576506, 1.0387154, -0.15296113, 0.038163185, -0.063129775, 0.19298702, -0.47331488, -0.5032498, 0.97411555, 0.23132245, -0.08143205, 0.06828522, -0.05104233, 0.12825334, -0.6535432, -0.6055182, 1.4632564, -0.75958496, -0.011932191, 0.07434231, -0.036014985, 0.035832103, -0.5997571, -0.4165971, 1.4737439, -1.4440106, 0.035568688, 0.052844297, -0.016191412, -0.042015295, -0.34478822, -0.00015842213, 1.0278994, -1.6287282, -0.041889265, -0.073420875, -0.053420313, -0.13673787, -0.046196006, 0.47162858, 0.33470702, -1.2528362, -0.22210827, -0.26161245, -0.13421825, -0.2273085, 0.24724324, 0.82251436, -0.39842722, 0.08813919, 1.6532695, -0.93925536, 0.14819603, 0.73586756, -1.6510178, 0.18909252, -0.57805634, -0.49923795, 1.3107568, 0.055973843, 0.50416434, 2.0101638, -1.9853302, -0.008322897, -0.8493723, 0.26303622, 6.1256294, -2.362463, -1.3185762, 0.073981375, -1.9407248, 1.0837413, -0.3268829]),
}
MODEL_SOURCES = {
    'errors': r'''"""Errors caused by the user's input or files; scripts print them as one line instead of a traceback."""


class UserError(Exception):
    pass


class DataError(UserError, ValueError):
    """Bad data on disk; the message names the file and, where it can, the line."""


class CheckpointError(UserError):
    """A missing, truncated or incompatible checkpoint; the message names the file."""


class ConfigError(UserError, ValueError):
    """Flags that contradict each other or the run being resumed."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class PeerLost(UserError):
    """Another process of a torchrun job died or hung: this one cannot go on."""
''',
    'flags': r'''"""Command-line flags built from config dataclasses. A field with help text is a flag (`batch_size` is
`--batch-size`) with the field's type, default and choices; a bool is `--<name>` / `--no-<name>` (either overrides a
config file's value); a nested config's flags join the same command line in a group of their own. So a new
hyperparameter is one field in one place, and its check one line of its config's `__post_init__`.
"""

import argparse
import dataclasses
import types
import typing

from math_llm.errors import ConfigError


def option(default, help, *, choices=None, group=None, resumable=False, extends=False):
    """A config field that is a command-line flag. `help` says what the flag does (for a True-by-default bool, what
    `--no-<name>` does); `group`: its section of --help; `resumable`: a resumed run may take a new value of it (it
    changes how the run is watched, not what it computes); `extends`: a resumed run may take a new value of it that
    changes what it computes from there on (the number of epochs, to extend a run)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "group": group,
                                                        "resumable": resumable, "extends": extends})


def choice_problems(config):
    """The rule of every field with choices, for the config's __post_init__ (argparse checks flags against the same
    choices, but a config is also built in code and from saved JSON)."""
    return [f"{flag_name(field)} must be one of {', '.join(field.metadata['choices'])}, got "
            f"{getattr(config, field.name)!r}" for field in dataclasses.fields(config)
            if field.metadata.get("choices") is not None and getattr(config, field.name) not in field.metadata["choices"]]


def nested(config_class, group):
    """A field holding another config, whose flags join the command line under `group`."""
    return dataclasses.field(default_factory=config_class, metadata={"group": group})


def flag_fields(config_class, path=()):
    """{field name: (path of attribute names, field)} of every flag of the config and the configs inside it."""
    hints = typing.get_type_hints(config_class)
    found = {}
    for field in dataclasses.fields(config_class):
        if dataclasses.is_dataclass(hints[field.name]):
            inner = flag_fields(hints[field.name], path + (field.name,))
            if clash := inner.keys() & found.keys():
                raise TypeError(f"{config_class.__name__}: flags {sorted(clash)} are declared twice")
            found.update(inner)
        elif "help" in field.metadata:
            found[field.name] = (path + (field.name,), field)
    return found


def value_type(annotation):
    """int for `int` or `int | None`."""
    if isinstance(annotation, types.UnionType):
        return next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation


def flag_name(field):
    return "--" + field.name.replace("_", "-")


def add_flags(parser, config_class):
    """Adds every flag of `config_class` (and of the configs inside it) to `parser`, in the argument groups their
    metadata names (none: the parser's own options)."""
    groups = {None: parser}

    def group_for(title):
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        return groups[title]

    def add(cls, inherited_group):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            kind = hints[field.name]
            if dataclasses.is_dataclass(kind):
                add(kind, field.metadata.get("group") or inherited_group)
                continue
            if "help" not in field.metadata:
                continue
            group = group_for(field.metadata["group"] or inherited_group)
            kind = value_type(kind)
            if kind is bool:
                group.add_argument(flag_name(field), dest=field.name, default=field.default,
                                   action=argparse.BooleanOptionalAction, help=field.metadata["help"])
                continue
            default_text = "" if field.default is None else " (default: %(default)s)"
            choices = field.metadata["choices"]
            group.add_argument(flag_name(field), dest=field.name, type=kind, default=field.default,
                               choices=list(choices) if choices is not None else None,
                               help=field.metadata["help"] + default_text)

    add(config_class, None)
    return parser


def config_from_flags(config_class, values):
    """The config (configs inside it too) from parsed flag values {field name: value}; fields that are not flags
    keep their defaults."""
    hints = typing.get_type_hints(config_class)
    arguments = {}
    for field in dataclasses.fields(config_class):
        if dataclasses.is_dataclass(hints[field.name]):
            arguments[field.name] = config_from_flags(hints[field.name], values)
        elif "help" in field.metadata and field.name in values:
            arguments[field.name] = values[field.name]
    return config_class(**arguments)


def parse_config(parser, config_class, argv, file_values=None):
    """(config, parsed namespace, names of the flags given explicitly): a resumed run keeps its own values for the
    flags not given. `file_values`: {field name: value} from a config file (see `flag_values`); the command line
    overrides them, and they count as given."""
    parser.set_defaults(**(file_values or {}))
    namespace = parser.parse_args(argv)
    config = config_from_flags(config_class, vars(namespace))
    not_given = object()  # not a string, so argparse does not type-convert it
    parser.set_defaults(**{name: not_given for name in vars(namespace)})
    explicit = frozenset(name for name, value in vars(parser.parse_args(argv)).items() if value is not not_given)
    parser.set_defaults(**vars(namespace))
    return config, namespace, explicit | set(file_values or ())


def flag_values(config_class, values, source):
    """{field name: value} of the flags in `values` (a mapping read from a YAML or JSON file, keyed by field name as
    `learning_rate`), each converted to its flag's type; an unknown name or a value of the wrong type is a
    ConfigError naming `source`."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
    fields = flag_fields(config_class)
    converted = {}
    for name, value in values.items():
        if name not in fields:
            raise ConfigError(f"{source}: unknown setting {name!r} (the settings are the flags of "
                              f"{config_class.__name__}, written with underscores: {', '.join(sorted(fields))})")
        field = fields[name][1]
        kind = value_type(field.type)
        try:
            converted[name] = convert(value, kind, field)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {name} must be {kind.__name__}"
                              f"{' or null' if field.type is not kind else ''}, got {value!r}") from None
    return converted


def convert(value, kind, field):
    """`value` as `kind`: YAML reads 1e-3 as a string and 3 as an int where a float is meant; nothing else is
    guessed (a bool is not a number, a number not a string)."""
    if value is None and field.type is not kind:
        return None
    if kind is float and not isinstance(value, bool) and isinstance(value, (int, float, str)):
        return float(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise TypeError(value)


def config_from_dict(config_class, values, source):
    """A config from its saved form (dataclasses.asdict, read back from JSON); `source` names the file in errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected the settings of {config_class.__name__} as an object, got "
                          f"{type(values).__name__}")
    hints = typing.get_type_hints(config_class)
    names = {field.name for field in dataclasses.fields(config_class)}
    if unknown := sorted(set(values) - names):
        raise ConfigError(f"{source}: unknown settings {', '.join(unknown)} for {config_class.__name__}")
    arguments = {name: config_from_dict(hints[name], value, source) if dataclasses.is_dataclass(hints[name])
                 else value for name, value in values.items()}
    try:
        return config_class(**arguments)
    except (TypeError, ConfigError) as error:  # a missing argument, or a value its __post_init__ refuses
        raise ConfigError(f"{source}: {error}") from None


def resume_config(config, explicit_flags, saved, source):
    """The saved config of a run being resumed, changed by the explicitly given flags that may change on resume;
    any other explicit flag that differs from the run is a ConfigError naming each, with both values."""
    conflicts, changes = [], {}
    for name, (path, field) in flag_fields(type(config)).items():
        given, had = attribute(config, path), attribute(saved, path)
        if name not in explicit_flags or given == had:
            continue
        if field.metadata["resumable"] or field.metadata["extends"]:
            changes[path] = given
        elif value_type(field.type) is bool:
            conflicts.append(f"{flag_name(field) if given else '--no-' + flag_name(field)[2:]} (run has {name} {had!r})")
        else:
            conflicts.append(f"{flag_name(field)} {given!r} (run has {had!r})")
    if conflicts:
        raise ConfigError(f"{source}: cannot resume with different settings: {', '.join(conflicts)}. "
                          f"Drop these flags to resume, or choose a new --output-dir")
    for path, value in changes.items():
        saved = with_attribute(saved, path, value)
    return saved


def attribute(config, path):
    for name in path:
        config = getattr(config, name)
    return config


def with_attribute(config, path, value):
    """A copy of the config with the attribute at `path` (inside nested configs) set to `value`."""
    inner = value if len(path) == 1 else with_attribute(getattr(config, path[0]), path[1:], value)
    return dataclasses.replace(config, **{path[0]: inner})
''',
    'model': r'''"""Decoder-only transformer (GPT-style, pre-LayerNorm) and its configuration: the named model sizes, the position
encodings (learned absolute, rotary, digit places) and the KV cache that incremental decoding writes into. It knows
no task: the tokens the digit places count come in through ModelConfig.
"""

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from math_llm.errors import ConfigError
from math_llm.flags import choice_problems, option

IGNORE_INDEX = -100  # targets the loss skips (the data marks prompt tokens and padding with it)
POS_ENCODINGS = {
    "learned": "a learned vector per sequence position, as GPT-2 (the default); nothing past the max length",
    "rope": "rotary embeddings (RoPE) on queries and keys, by sequence position; no length limit",
    "abacus": "a fixed random vector per digit place, counted within each number from its first digit (the least "
              "significant in the operand-reversed formats), with a random offset per training example so that places "
              "beyond the longest trained number are trained too (Abacus, McLeish et al. 2024; position "
              "coupling, Cho et al. 2024), and an attention penalty growing with the distance between two digits' "
              "places; no other position signal",
}
# Shapes from the seed README's table; "tiny" is for tests and smoke runs.
MODEL_SIZES = {
    "tiny": dict(num_layers=2, hidden_size=64, num_heads=2, ffn_size=128),
    "small": dict(num_layers=4, hidden_size=256, num_heads=4, ffn_size=512),
    "medium": dict(num_layers=6, hidden_size=512, num_heads=8, ffn_size=1024),
    "large": dict(num_layers=8, hidden_size=512, num_heads=8, ffn_size=2048),
}
ROPE_BASE = 10_000.0
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")


@dataclass
class ModelConfig:
    model_size: str = option("small", "model shape: layers, width, heads and feed-forward width, see docs/usage.md",
                             choices=MODEL_SIZES)
    num_layers: int | None = option(None, "transformer blocks (default: those of --model-size)")
    hidden_size: int | None = option(None, "width of the residual stream (default: that of --model-size)")
    num_heads: int | None = option(None, "attention heads, dividing --hidden-size (default: those of --model-size)")
    ffn_size: int | None = option(None, "width of the MLP's hidden layer (default: that of --model-size)")
    head_dim: int | None = option(None, "width of each attention head (default: --hidden-size / --num-heads); "
                                        "queries, keys and values are --num-heads x this wide")
    norm: str = option("layernorm", "the normalisation before each sublayer and the head", choices=NORMS)
    mlp: str = option("gelu", "the feed-forward layer: gelu (two matrices, GELU between) or swiglu (a SiLU-gated "
                              "pair in, one out: three matrices)", choices=MLPS)
    bias: bool = option(True, "biases in the linear layers and the norms; --no-bias: none")
    tie_embeddings: bool = option(True, "the output head reuses the token embedding (counted once); "
                                        "--no-tie-embeddings: a head of its own")
    rank: int | None = option(None, "low rank: each linear layer of the blocks is a product of two thin matrices "
                                    "(in x R, then R x out), where R is below both of its sides (default: full rank)")
    max_length: int = option(32, "longest example in tokens; longer ones are an error")
    dropout: float = option(0.0, "dropout rate")
    pos_encoding: str = option("learned", "; ".join(f"{name}: {text}" for name, text in POS_ENCODINGS.items()),
                               choices=POS_ENCODINGS)
    digit_positions: int = option(128, "abacus: size of the digit-place table; training spreads the places of its "
                                       "numbers over all of it, and evaluation reads additions of up to this - 3 "
                                       "digits (the answer has a digit more, and the = takes place 1)")
    place_bias: bool = option(True, "abacus: an attention penalty for the distance between digit places; "
                                    "--no-place-bias: the digit-place vectors alone, as the Abacus paper (generalises "
                                    "far less, see recipes/lengthgen_abacus_no_place_bias.yaml)")
    # Set from the data's vocabulary when a run starts (Tokenizer.digit_place_ids): not flags
    vocab_size: int = 13
    digit_ids: tuple = ()  # abacus: the tokens it counts as digits
    answer_start_id: int = -1  # abacus: the token that starts the answer's count ("=")
    sign_id: int = -1  # abacus: a sign right after the answer start shares its place ("-")

    def __post_init__(self):
        if problems := choice_problems(self):  # the size's shape and the rules below need valid choices
            raise ConfigError("; ".join(problems))
        for name, value in MODEL_SIZES[self.model_size].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.digit_ids = tuple(self.digit_ids)
        problems = [f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}"
                    for name in ("num_layers", "hidden_size", "num_heads", "ffn_size", "max_length")
                    if getattr(self, name) < 1]
        if self.head_dim is not None and self.head_dim < 1 or self.rank is not None and self.rank < 1:
            problems.append("--head-dim and --rank must be at least 1")
        if not problems and self.head_dim is None and self.hidden_size % self.num_heads:
            problems.append(f"--hidden-size {self.hidden_size} is not divisible by --num-heads {self.num_heads} "
                            f"(or give --head-dim)")
        if not 0 <= self.dropout < 1:
            problems.append(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.digit_positions < 2:
            problems.append(f"--digit-positions must be at least 2, got {self.digit_positions}")
        if not problems and self.pos_encoding == "rope" and self.attention_head_size % 2:
            problems.append(f"--pos-encoding rope needs an even head width, got {self.attention_head_size}")
        if not self.place_bias and self.pos_encoding != "abacus":
            problems.append("--no-place-bias applies to --pos-encoding abacus only")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def attention_head_size(self):
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def shape_text(self):
        """'2 layers, width 64, 2 heads of 32, feed-forward 128 (gelu), layernorm', and the options that leave
        GPT-2's block (no biases, an untied head, low rank)."""
        options = [text for text, chosen in (("no biases", not self.bias), ("untied head", not self.tie_embeddings),
                                             (f"rank {self.rank}", self.rank)) if chosen]
        return ", ".join([f"{self.num_layers} layer{'s' * (self.num_layers != 1)}", f"width {self.hidden_size}",
                          f"{self.num_heads} head{'s' * (self.num_heads != 1)} of {self.attention_head_size}",
                          f"feed-forward {self.ffn_size} ({self.mlp})", self.norm, *options])


class KVCache:
    """Keys and values of every layer for one batch being decoded: fixed-size buffers of `max_tokens` positions,
    filled from position 0, and for the abacus encoding the digit places of the tokens so far and the last token.

    The prompt is written in one call (causal attention within it), then one token per call."""

    def __init__(self, config, batch_size, device, max_tokens=None):
        self.shape = (config.num_layers, batch_size, config.num_heads, max_tokens or config.max_length,
                      config.attention_head_size)
        self.device = device
        self.keys = self.values = None  # allocated on first use, in the dtype the model computes in
        self.length = 0  # positions filled so far
        self.last_digit_place = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.last_token = torch.full((batch_size,), -1, device=device)
        self.places = torch.zeros(batch_size, self.shape[3], dtype=torch.long, device=device)  # of cached tokens

    def update(self, layer, keys, values):
        """Stores this layer's keys/values for the new positions; returns those of all positions so far."""
        if self.keys is None:
            self.keys = torch.zeros(self.shape, dtype=keys.dtype, device=self.device)
            self.values = torch.zeros(self.shape, dtype=values.dtype, device=self.device)
        end = self.length + keys.shape[2]
        if end > self.shape[3]:
            raise ValueError(f"the KV cache holds {self.shape[3]} positions; {end} were asked for")
        self.keys[layer, :, :, self.length:end] = keys
        self.values[layer, :, :, self.length:end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class DigitPlaces(nn.Module):
    """The abacus index of each token: 1, 2, 3... along the digits of each number, 0 for operators and the like.

    The answer-start token ("=") starts the answer's count at 1, so that the token predicting the answer's k-th
    digit has place k, the place of the operand digits it needs (coupled positions); a negative answer's sign shares
    the place of the "=" for the same reason. In the operand-reversed formats place 1 is the least significant digit
    of every number. Which tokens are digits, answer start and sign comes from the config."""

    def __init__(self, config):
        super().__init__()
        if not config.digit_ids:
            raise ValueError("ModelConfig.digit_ids is empty: the abacus encoding has no digits to count")
        is_digit = torch.zeros(config.vocab_size, dtype=torch.bool)
        is_digit[list(config.digit_ids)] = True
        self.register_buffer("is_digit", is_digit, persistent=False)  # derived from the config, never saved
        self.answer_start_id, self.sign_id = config.answer_start_id, config.sign_id

    def forward(self, idx, last_place=None, last_token=None):
        """idx: [batch, length] token ids. `last_place`, `last_token` [batch]: the place and id of the token before
        idx[:, 0] (incremental decoding); none means idx starts the sequence."""
        batch, length = idx.shape
        steps = torch.arange(length, device=idx.device)
        last_place = torch.zeros(batch, dtype=torch.long, device=idx.device) if last_place is None else last_place
        last_token = torch.full((batch,), -1, device=idx.device) if last_token is None else last_token
        is_answer_start = idx == self.answer_start_id
        follows_answer_start = torch.cat([last_token[:, None], idx[:, :-1]], dim=1) == self.answer_start_id
        is_sign = (idx == self.sign_id) & follows_answer_start
        counted = self.is_digit[idx] | is_answer_start | is_sign
        after_counted = torch.cat([last_place[:, None] > 0, counted[:, :-1]], dim=1)
        starts = is_answer_start | (counted & ~after_counted)
        last_start = torch.cummax(torch.where(starts, steps, -1), dim=1).values
        advancing = (counted & ~is_sign).long()  # the tokens that move the count on
        advanced = advancing.cumsum(dim=1)
        before_start = torch.gather(advanced - advancing, 1, last_start.clamp(min=0))
        # A count that began before this chunk continues from last_place
        places = torch.where(last_start >= 0, advanced - before_start, last_place[:, None] + advanced)
        return torch.where(counted, places, 0)


def random_place_offsets(places, table_size):
    """Places shifted by one random offset per example (0 stays 0), as large as the table allows: training sees
    every place up to table_size - 1, so numbers longer than any trained one land on trained places."""
    room = table_size - 1 - places.max(dim=1).values  # >= 0: training data is checked to fit
    offsets = (torch.rand(places.shape[0], device=places.device) * (room + 1)).long()
    return torch.where(places > 0, places + offsets[:, None], 0)


def place_distance_bias(query_places, key_places, num_heads):
    """Additive attention scores [batch, heads, queries, keys]: -slope x |place distance| between two digits, with
    slopes 1, 1/2, 1/4... per head (ALiBi's penalty, over digit places instead of sequence positions); 0 where
    either token has no place (operators; "=" and a sign have one), -inf for keys after the query (causal). The
    queries are the last of the keys.

    Digits of distant places then cannot crowd out the digits of the query's own column in a number of any
    length: without it, numbers a few digits longer than any trained one already failed (recipes
    lengthgen_abacus and lengthgen_abacus_no_place_bias)."""
    num_queries, num_keys = query_places.shape[1], key_places.shape[1]
    digits = (query_places[:, :, None] > 0) & (key_places[:, None, :] > 0)
    distance = ((query_places[:, :, None] - key_places[:, None, :]).abs() * digits).float()
    slopes = 0.5 ** torch.arange(num_heads, device=query_places.device, dtype=torch.float32)
    future = torch.ones(num_queries, num_keys, dtype=torch.bool, device=query_places.device).triu(
        num_keys - num_queries + 1)
    return (-slopes[:, None, None] * distance[:, None]).masked_fill(future, float("-inf"))


def rotary_angles(start, end, head_size, device):
    """(cos, sin), each [end - start, head_size / 2], of the rotations RoPE applies at these positions."""
    frequencies = ROPE_BASE ** (-torch.arange(0, head_size, 2, device=device, dtype=torch.float32) / head_size)
    angles = torch.arange(start, end, device=device, dtype=torch.float32)[:, None] * frequencies
    return angles.cos(), angles.sin()


def rotate(x, cos, sin):
    """RoPE on x [batch, heads, length, head_size]: each pair (x_i, x_{i + head_size/2}) rotated by its angle."""
    first, second = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


def attention_kernels(query):
    """Under bf16/fp16 on CPU, the math path (plain matmuls + softmax): the CPU flash kernel's backward is ~30x
    slower there at these short lengths (docs/speed.md). Otherwise PyTorch's own choice (flash on CPU in fp32)."""
    if query.device.type == "cpu" and query.dtype != torch.float32:
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


class LowRankLinear(nn.Sequential):
    """A linear layer as the product of two thin ones: in x R without a bias, then R x out (--rank R)."""

    def __init__(self, in_features, out_features, rank, bias):
        super().__init__(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features, bias=bias))
        self.rank = rank

    def init_weights(self, std):
        """Both factors at sqrt(std / sqrt(R)), so that their product starts with the spread of a full layer's
        weights at `std`. Both at `std` would start it std x sqrt(R) times smaller (0.0008 for 0.02 at rank 4): a
        model too close to zero to learn (recipes/adder_shapes.yaml's low-rank shapes stayed at 0% that way)."""
        for factor in self:
            nn.init.normal_(factor.weight, mean=0.0, std=math.sqrt(std / math.sqrt(self.rank)))


def linear(in_features, out_features, config):
    """A linear layer of the blocks: full rank, or with --rank R below both sides, a LowRankLinear, R(in + out)
    weights where a full one has in x out."""
    if config.rank is None or config.rank >= min(in_features, out_features):
        return nn.Linear(in_features, out_features, bias=config.bias)
    return LowRankLinear(in_features, out_features, config.rank, config.bias)


def norm(config):
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.hidden_size)  # a gain and no bias whatever --bias says: RMSNorm has none
    return nn.LayerNorm(config.hidden_size, bias=config.bias)


def residual_output(layer):
    """Marks the layer that writes into the residual stream, for GPT-2's scaled initialisation."""
    layer.writes_residual = True
    return layer


class SwiGLU(nn.Module):
    """SiLU(x W_gate) * (x W_up), then W_down (Shazeer 2020): three matrices where GELU's MLP has two."""

    def __init__(self, config):
        super().__init__()
        self.gate = linear(config.hidden_size, config.ffn_size, config)
        self.up = linear(config.hidden_size, config.ffn_size, config)
        self.down = residual_output(linear(config.ffn_size, config.hidden_size, config))

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


def feed_forward(config):
    if config.mlp == "swiglu":
        return SwiGLU(config)
    return nn.Sequential(linear(config.hidden_size, config.ffn_size, config), nn.GELU(),
                         residual_output(linear(config.ffn_size, config.hidden_size, config)))


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_index):
        super().__init__()
        self.num_heads, self.head_size = config.num_heads, config.attention_head_size
        self.layer_index = layer_index
        width = config.num_heads * config.attention_head_size
        self.qkv = linear(config.hidden_size, 3 * width, config)
        self.proj = residual_output(linear(width, config.hidden_size, config))
        self.dropout = config.dropout

    def forward(self, x, cache=None, rotary=None, bias=None):
        """`rotary`: RoPE's (cos, sin) for these positions; `bias`: additive attention scores that already hold the
        causal mask (place_distance_bias)."""
        batch, length, _ = x.shape
        width = self.num_heads * self.head_size
        q, k, v = self.qkv(x).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.num_heads, self.head_size).transpose(1, 2) for t in (q, k, v))
        if rotary is not None:
            q, k = rotate(q, *rotary), rotate(k, *rotary)
        # Causal within the new positions; a single new token attends to everything cached before it.
        is_causal = length > 1
        if cache is not None:
            if cache.length and length > 1:
                raise ValueError("a KV cache takes the prompt in one call and then one token per call")
            k, v = cache.update(self.layer_index, k, v)
        with attention_kernels(q):
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.to(q.dtype),
                                               is_causal=is_causal and bias is None,
                                               dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    def __init__(self, config, layer_index):
        super().__init__()
        self.ln_attention = norm(config)
        self.attention = CausalSelfAttention(config, layer_index)
        self.ln_mlp = norm(config)
        self.mlp = feed_forward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, cache=None, rotary=None, bias=None):
        x = x + self.dropout(self.attention(self.ln_attention(x), cache, rotary, bias))
        return x + self.dropout(self.mlp(self.ln_mlp(x)))


class Transformer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        if config.pos_encoding == "learned":
            self.position_embedding = nn.Embedding(config.max_length, config.hidden_size)
        elif config.pos_encoding == "abacus":
            self.digit_places = DigitPlaces(config)
            # Fixed random codes, not trained: a learned table left the loss plateau later and less reliably, and
            # its first places were the least trained (DESIGN.md, Model). A buffer, so it is saved with the weights.
            self.register_buffer("digit_place_codes", 0.02 * torch.randn(config.digit_positions, config.hidden_size))
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, index) for index in range(config.num_layers))
        self.ln_final = norm(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight  # weight tying, as in GPT-2
        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that write into the residual stream; low-rank layers as a whole.
        for module in self.modules():
            std = 0.02 / math.sqrt(2 * config.num_layers) if getattr(module, "writes_residual", False) else 0.02
            if isinstance(module, LowRankLinear):
                module.init_weights(std)
            elif getattr(module, "writes_residual", False):
                nn.init.normal_(module.weight, mean=0.0, std=std)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self):
        """Unique trained parameters, as AdderBoard counts them: a tied weight once, fixed buffers (the abacus
        codes) not at all."""
        return sum(p.numel() for p in self.parameters())

    @property
    def max_tokens(self):
        """The longest sequence this model can read: its learned position table, else no limit (None)."""
        return self.config.max_length if self.config.pos_encoding == "learned" else None

    def reading_error(self, num_tokens, highest_place=0):
        """Why a sequence of `num_tokens` whose highest digit place is `highest_place` is more than this model can
        read (None if it is not): the one place where its limits are checked."""
        if self.max_tokens is not None and num_tokens > self.max_tokens:
            return (f"{num_tokens} tokens, more than the max_length of {self.max_tokens} (train.py --max-length)")
        if self.config.pos_encoding == "abacus" and highest_place >= self.config.digit_positions:
            return (f"a number that reaches digit place {highest_place}, beyond the model's "
                    f"{self.config.digit_positions - 1} (train.py --digit-positions)")
        return None

    @torch.no_grad()
    def unreadable(self, tokens, lengths, rows_per_chunk=65_536):
        """Yields (index, reason) for each of these sequences (`tokens` [examples, length], each `lengths` long) that
        this model cannot read. In chunks: a training split may be large."""
        device = self.token_embedding.weight.device
        for start in range(0, len(tokens), rows_per_chunk):
            rows = tokens[start:start + rows_per_chunk]
            highest = (self.digit_places(rows.to(device)).amax(dim=1) if self.config.pos_encoding == "abacus"
                       else torch.zeros(len(rows), dtype=torch.long))
            for index, (length, place) in enumerate(zip(lengths[start:start + len(rows)].tolist(), highest.tolist())):
                if reason := self.reading_error(length, place):
                    yield start + index, reason

    def embed(self, idx, start, cache):
        """Token embeddings plus this encoding's position signal; RoPE's angles and the abacus attention bias (each
        None where it does not apply)."""
        x = self.token_embedding(idx)
        end = start + idx.shape[1]
        encoding = self.config.pos_encoding
        if encoding == "learned":
            if error := self.reading_error(end):
                raise ValueError(f"a sequence of {error}")
            return x + self.position_embedding(torch.arange(start, end, device=idx.device)), None, None
        if encoding == "rope":
            return x, rotary_angles(start, end, self.config.attention_head_size, idx.device), None
        places = self.digit_places(idx, *((cache.last_digit_place, cache.last_token) if cache is not None else ()))
        key_places = places
        if cache is not None:
            cache.last_digit_place, cache.last_token = places[:, -1], idx[:, -1]
            cache.places[:, start:end] = places
            key_places = cache.places[:, :end]
        bias = place_distance_bias(places, key_places, self.config.num_heads) if self.config.place_bias else None
        if self.training:  # distances within an example do not change with its offset
            places = random_place_offsets(places, self.config.digit_positions)
        elif error := self.reading_error(0, int(places.max())):  # a host sync, in evaluation only
            raise ValueError(f"the input has {error}")
        return x + self.digit_place_codes[places], None, bias

    def forward(self, idx, targets=None, cache=None):
        """idx: [batch, length] token ids, continuing what `cache` holds if one is given. Returns (logits [batch,
        length, vocab], the mean loss over the targets that are not IGNORE_INDEX, or None without targets)."""
        return self.head(self.hidden_states(idx, cache), targets)

    def hidden_states(self, idx, cache=None):
        """The last block's output at every position, before the final LayerNorm (what a probe may read)."""
        start = cache.length if cache is not None else 0
        x, rotary, bias = self.embed(idx, start, cache)
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x, cache, rotary, bias)
        if cache is not None:
            cache.length = start + idx.shape[1]
        return x

    def head(self, hidden, targets=None):
        """(logits, loss) from hidden_states' output."""
        logits = self.lm_head(self.ln_final(hidden))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=IGNORE_INDEX)
        return logits, loss
''',
}
PACKAGE = "math_llm_adderboard_submission"  # the model code's own package name: never an installed Math LLM's


def load_model_code():
    """Math LLM's model.py (and the modules it imports) from MODEL_SOURCES, as a package of its own."""
    if PACKAGE + ".model" not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = []
        sys.modules[PACKAGE] = package
        for name, source in MODEL_SOURCES.items():
            module = types.ModuleType(f"{PACKAGE}.{name}")
            sys.modules[module.__name__] = module  # before it runs: dataclasses look their module up
            exec(compile(source.replace("from math_llm.", f"from {PACKAGE}."), f"<math_llm/{name}.py>", "exec"),
                 module.__dict__)
    return sys.modules[PACKAGE + ".model"]


def build_model():
    model_code = load_model_code()
    model = model_code.Transformer(model_code.ModelConfig(**MODEL_CONFIG))
    weights = {name: torch.tensor(values, dtype=torch.float32).reshape(shape)
               for name, (shape, values) in WEIGHTS.items()}
    model.load_state_dict(weights)  # strict: every weight and buffer, and nothing else
    return model.eval(), METADATA


@torch.no_grad()
def greedy_decode(model, prompt, max_new_tokens):
    """Generic autoregressive decoding: the whole sequence through the model for each new token, the most likely
    token appended, until the end token or the budget."""
    ids = [VOCAB.index(character) for character in prompt]
    end_id, generated = VOCAB.index("<end>"), []
    for _ in range(max_new_tokens):
        logits, _ = model(torch.tensor([ids + generated]))
        next_id = int(logits[0, -1].argmax())
        if next_id == end_id:
            break
        generated.append(next_id)
    return "".join(VOCAB[i] for i in generated)


def prompt(a, b):
    """a + b as the model's training data wrote it: zero-padded (to the data's width, or to the longer operand) and
    digits reversed where its format says so."""
    width = OPERAND_WIDTH if PADDING == "width" else max(len(str(a)), len(str(b))) if PADDING == "longest" else 0
    operands = [str(x).zfill(width) for x in (a, b)]
    if REVERSE_OPERANDS:
        operands = [text[::-1] for text in operands]
    return "+".join(operands) + "="


def answer_text(model, a, b):
    """The model's greedy answer to a + b, as it writes it (a scratchpad's steps included), up to the longest
    sequence it was trained on."""
    text = prompt(a, b)
    return greedy_decode(model, text, MODEL_CONFIG["max_length"] - len(text))


def add(model, a, b):
    """The number the model writes: the text after its scratchpad, if any, read in the order its format writes."""
    answer = answer_text(model, a, b).split("</think>")[-1]
    return int(answer[::-1] if REVERSE_ANSWER else answer)
